// Error: how the control plane (configuration, devices file, templates, server start-up)
// reports a failure: a kind that decides what happens next (the process exit code, whether
// a reload keeps the previous snapshot) and one line of text for the operator. The data plane
// never uses it (its errors are small enums, common/result.h).
//
// Pure value type; any thread.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>

#include "common/result.h"

namespace coapgate {

enum class ErrorKind : uint8_t {
  kBadInput,     ///< what the operator wrote is wrong: config, devices, template, command line
  kEnvironment,  ///< the system refused: a port in use, a file unreadable, a permission
};

struct Error {
  ErrorKind kind;
  std::string message;  ///< one line, naming the file and the key or line
};

// The message, for logs and test diagnostics.
inline std::ostream& operator<<(std::ostream& out, const Error& error) {
  return out << error.message;
}

[[nodiscard]] inline tl::unexpected<Error> FailBadInput(std::string message) {
  return tl::unexpected<Error>(Error{ErrorKind::kBadInput, std::move(message)});
}
[[nodiscard]] inline tl::unexpected<Error> FailEnvironment(std::string message) {
  return tl::unexpected<Error>(Error{ErrorKind::kEnvironment, std::move(message)});
}

// The process exit status for a failure of this kind (0 is success, documented in docs/cli.md).
[[nodiscard]] constexpr int ExitCode(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::kBadInput: return 2;
    case ErrorKind::kEnvironment: return 1;
  }
  return 1;
}

}  // namespace coapgate
