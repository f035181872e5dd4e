#include "app/log_setup.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <regex>
#include <sstream>
#include <string>

#include "common/log_fields.h"

namespace coapgate::app {
namespace {

// A logger on a string stream with the JSON formatter: what the json format writes.
struct JsonCapture {
  std::ostringstream out;
  std::shared_ptr<spdlog::logger> logger;

  JsonCapture() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
    sink->set_formatter(MakeJsonFormatter());
    logger = std::make_shared<spdlog::logger>("test", sink);
    logger->set_level(spdlog::level::debug);
  }
};

TEST(JsonLogFormat, OneObjectPerLineWithUtcMillisecondTimestamp) {
  JsonCapture c;
  c.logger->info("listening on {}", "coap://0.0.0.0:5683");
  c.logger->warn("second");
  const std::string text = c.out.str();
  const std::regex line(
      R"(\{"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","level":"info","msg":"listening on )"
      R"(coap://0\.0\.0\.0:5683"\}\n\{"ts":"[^"]+","level":"warn","msg":"second"\}\n)");
  EXPECT_TRUE(std::regex_match(text, line)) << text;
}

TEST(JsonLogFormat, EscapesTheMessage) {
  JsonCapture c;
  c.logger->error("a \"quoted\"\nline\\");
  EXPECT_NE(c.out.str().find(R"("level":"error","msg":"a \"quoted\"\u000aline\\"})"),
            std::string::npos)
      << c.out.str();
}

TEST(JsonLogFormat, CarriesTheCallSitesFieldsOnlyInTheirScope) {
  JsonCapture c;
  {
    const LogField fields[] = {{"addr", "127.0.0.1:5555"},
                               {"code", "4.01"},
                               {"reason", "unknown_device"},
                               {"suppressed", "49", /*number=*/true}};
    ScopedLogFields scope(fields);
    c.logger->debug("refused");
  }
  c.logger->debug("plain");
  const std::string text = c.out.str();
  EXPECT_NE(text.find(R"("msg":"refused","addr":"127.0.0.1:5555","code":"4.01",)"
                      R"("reason":"unknown_device","suppressed":49})"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"("msg":"plain"})"), std::string::npos) << text;
}

TEST(LogSetup, AppliesTheLevel) {
  SetUpLogging(config::LogLevel::kWarn, config::LogFormat::kJson);
  EXPECT_FALSE(spdlog::default_logger_raw()->should_log(spdlog::level::info));
  EXPECT_TRUE(spdlog::default_logger_raw()->should_log(spdlog::level::warn));
  SetUpLogging(config::LogLevel::kDebug, config::LogFormat::kText);
  EXPECT_TRUE(spdlog::default_logger_raw()->should_log(spdlog::level::debug));
  SetUpLogging(config::LogLevel::kInfo, config::LogFormat::kText);
}

}  // namespace
}  // namespace coapgate::app
