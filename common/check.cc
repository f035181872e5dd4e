#include "common/check.h"

#include <cstdio>
#include <cstdlib>

namespace coapgate::internal {

void CheckFailed(const char* file, int line, const char* condition,
                 const char* message) noexcept {
  // fprintf, not a logger: this must work before logging is set up and from any thread.
  std::fprintf(stderr, "coapgate: CHECK failed at %s:%d: %s: %s\n", file, line, condition,
               message);
  std::fflush(stderr);
  std::abort();
}

}  // namespace coapgate::internal
