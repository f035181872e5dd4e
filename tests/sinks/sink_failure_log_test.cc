#include "sinks/sink_failure_log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>

namespace coapgate::sinks {
namespace {

// The default logger on a string stream for the test's duration, with the message only.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out_);
    sink->set_pattern("%v");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  [[nodiscard]] std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

TEST(SinkFailureLog, EveryFailureIsCountedUnderItsCauseAndInItsTotal) {
  LogCapture capture;
  SinkCounters counters;
  SinkFailureLog log("mqtt://127.0.0.1:1883");
  log.Report(counters, SinkFailure::kDown, 3, 1000, "not connected");
  log.Report(counters, SinkFailure::kAbandoned, 2, 1000, "stopped");
  EXPECT_EQ(counters.Get(SinkFailure::kDown), 3u);
  EXPECT_EQ(counters.Get(SinkFailure::kAbandoned), 2u);
  EXPECT_EQ(counters.refused.load(), 3u) << "down is a refusal: no Settle follows";
  EXPECT_EQ(counters.failed.load(), 2u) << "abandoned tickets are settled failed";
  EXPECT_EQ(capture.text(),
            "mqtt://127.0.0.1:1883: 3 message(s) refused (down): not connected\n"
            "mqtt://127.0.0.1:1883: 2 message(s) failed (abandoned): stopped\n");
}

TEST(SinkFailureLog, ACauseRepeatingAtMessageRateMakesOneLinePerInterval) {
  LogCapture capture;
  SinkCounters counters;
  SinkFailureLog log("kafka:telemetry", /*interval_ms=*/10000);
  for (uint64_t t = 0; t < 1000; ++t) {
    log.Report(counters, SinkFailure::kBackpressure, 1, 5000 + t, "Local: Queue full");
  }
  // Another cause has a turn of its own.
  log.Report(counters, SinkFailure::kInvalid, 1, 5500, "Broker: Message size too large");
  // The next turn carries the 999 held back.
  log.Report(counters, SinkFailure::kBackpressure, 1, 15000, "Local: Queue full");
  EXPECT_EQ(counters.Get(SinkFailure::kBackpressure), 1001u);
  EXPECT_EQ(capture.text(),
            "kafka:telemetry: 1 message(s) refused (backpressure): Local: Queue full\n"
            "kafka:telemetry: 1 message(s) refused (invalid): Broker: Message size too large\n"
            "kafka:telemetry: 1000 message(s) refused (backpressure): Local: Queue full\n");
}

TEST(SinkFailureLog, NothingToReportWritesNothing) {
  LogCapture capture;
  SinkCounters counters;
  SinkFailureLog log("file:-");
  log.Report(counters, SinkFailure::kAbandoned, 0, 1000, "stopped");
  EXPECT_EQ(counters.failed.load(), 0u);
  EXPECT_EQ(capture.text(), "");
}

TEST(SinkFailure, EveryCauseHasAMetricLabel) {
  for (size_t k = 0; k < static_cast<size_t>(SinkFailure::kCount_); ++k) {
    EXPECT_STRNE(ToString(static_cast<SinkFailure>(k)), "unknown") << k;
  }
}

}  // namespace
}  // namespace coapgate::sinks
