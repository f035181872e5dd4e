// LogFields: structured key/value pairs a call site attaches to the log line it is about to
// write, so that the JSON log format (app/log_setup.h) can carry them as fields ("iccid",
// "addr", "code", "reason") next to "msg", while the text format shows only the message, which
// always says the same thing in words.
//
//   const LogField fields[] = {{"addr", addr}, {"code", "4.01"}, {"reason", "unknown_device"}};
//   ScopedLogFields scope(fields);
//   spdlog::debug("...");   // the formatter reads CurrentLogFields() on this thread
//
// Why a thread-local and not an argument: spdlog has no structured fields; its synchronous
// loggers format on the calling thread inside the log call, so the formatter sees exactly the
// fields of the line being written. (An asynchronous logger would format elsewhere and see
// none: coapgate's loggers are synchronous, see app/log_setup.cc.)
//
// No allocation: the fields and their values are views owned by the call site's stack, valid
// for the scope's lifetime. Any thread; each thread sees only its own fields.
#pragma once

#include <span>
#include <string_view>

namespace coapgate {

struct LogField {
  std::string_view key;
  std::string_view value;
  bool number = false;  ///< written as a JSON number (value must be decimal digits)
};

namespace log_fields_detail {
inline thread_local std::span<const LogField> current{};
}  // namespace log_fields_detail

// The fields of the line being logged on this thread (empty outside a ScopedLogFields).
[[nodiscard]] inline std::span<const LogField> CurrentLogFields() noexcept {
  return log_fields_detail::current;
}

class ScopedLogFields {
 public:
  explicit ScopedLogFields(std::span<const LogField> fields) noexcept
      : previous_(log_fields_detail::current) {
    log_fields_detail::current = fields;
  }
  ~ScopedLogFields() { log_fields_detail::current = previous_; }
  ScopedLogFields(const ScopedLogFields&) = delete;
  ScopedLogFields& operator=(const ScopedLogFields&) = delete;

 private:
  std::span<const LogField> previous_;
};

}  // namespace coapgate
