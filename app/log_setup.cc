#include "app/log_setup.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <string_view>

#include "common/json_escape.h"
#include "common/log_fields.h"
#include "common/rfc3339.h"

namespace coapgate::app {
namespace {

// The text format coapgate had before [log]: kept byte for byte for those who grep it.
constexpr const char* kTextPattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v";

spdlog::level::level_enum SpdlogLevel(config::LogLevel level) {
  switch (level) {
    case config::LogLevel::kDebug: return spdlog::level::debug;
    case config::LogLevel::kInfo: return spdlog::level::info;
    case config::LogLevel::kWarn: return spdlog::level::warn;
    case config::LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

// The [log] level names, so that a filter on "level" uses the words the configuration does.
std::string_view LevelName(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace: return "trace";
    case spdlog::level::debug: return "debug";
    case spdlog::level::info: return "info";
    case spdlog::level::warn: return "warn";
    case spdlog::level::err: return "error";
    case spdlog::level::critical: return "critical";
    default: return "off";
  }
}

void Append(spdlog::memory_buf_t& dest, std::string_view text) {
  dest.append(text.data(), text.data() + text.size());
}

void AppendEscaped(spdlog::memory_buf_t& dest, std::string_view text) {
  const size_t at = dest.size();
  const size_t n = JsonEscapedLength(text);
  dest.resize(at + n);
  (void)JsonEscape(text, std::span<char>(dest.data() + at, n));
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        msg.time.time_since_epoch())
                        .count();
    std::array<char, kRfc3339Size> ts;
    const size_t n = FormatRfc3339(static_cast<uint64_t>(ms), /*milliseconds=*/true, ts);
    Append(dest, "{\"ts\":\"");
    Append(dest, std::string_view(ts.data(), n));
    Append(dest, "\",\"level\":\"");
    Append(dest, LevelName(msg.level));
    Append(dest, "\",\"msg\":\"");
    AppendEscaped(dest, std::string_view(msg.payload.data(), msg.payload.size()));
    dest.push_back('"');
    for (const LogField& field : CurrentLogFields()) {
      Append(dest, ",\"");
      AppendEscaped(dest, field.key);
      Append(dest, "\":");
      if (field.number && !field.value.empty()) {
        Append(dest, field.value);
      } else {
        dest.push_back('"');
        AppendEscaped(dest, field.value);
        dest.push_back('"');
      }
    }
    Append(dest, "}\n");
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

std::unique_ptr<spdlog::formatter> MakeJsonFormatter() { return std::make_unique<JsonFormatter>(); }

void SetUpLogging(config::LogLevel level, config::LogFormat format) {
  std::shared_ptr<spdlog::sinks::sink> sink;
  if (format == config::LogFormat::kJson) {
    // No color codes in JSON: stderr_sink, not the color sink.
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_formatter(MakeJsonFormatter());
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    sink->set_pattern(kTextPattern);
  }
  auto logger = std::make_shared<spdlog::logger>("coapgate", std::move(sink));
  logger->set_level(SpdlogLevel(level));
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace coapgate::app
