// WriteFileAtomically: replace a file so that a reader sees the old one or the new one, never
// half of either. Control plane (blocking syscalls), any thread.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"
#include "common/result.h"

namespace coapgate {

// Writes `bytes` to "<path>.tmp" (created 0600: what is saved this way is private to the
// service: registry snapshots, restart state), fsyncs it and renames it over `path`. On any
// failure the temporary file is removed, `path` is untouched, and the error (kEnvironment)
// names the file and the system's reason.
[[nodiscard]] Result<void, Error> WriteFileAtomically(const std::string& path,
                                                      std::string_view bytes);

// strerror-like text for an errno value, thread-safe.
[[nodiscard]] std::string ErrnoText(int error);

}  // namespace coapgate
