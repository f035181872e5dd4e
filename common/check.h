// CHECK and DCHECK: how coapgate stops on the impossible. CHECK(condition, "why") aborts
// with file:line, the condition and the message on stderr in every build; DCHECK does the
// same in debug and sanitizer builds (NDEBUG unset) and compiles to nothing in release.
//
// For states that only a bug can reach (an encoder refusing a reply that always fits, a
// socket family the server never opens) — never for untrusted input, which is dropped and
// counted, nor for the environment (a full disk, a broker away), which is handled. Usable in
// noexcept code on any thread; allocates nothing.
#pragma once

namespace coapgate::internal {

[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* message) noexcept;

}  // namespace coapgate::internal

#define CHECK(condition, message)                                                   \
  do {                                                                              \
    if (!(condition)) [[unlikely]] {                                                \
      ::coapgate::internal::CheckFailed(__FILE__, __LINE__, #condition, message);   \
    }                                                                               \
  } while (false)

#ifdef NDEBUG
#define DCHECK(condition, message) \
  do {                             \
  } while (false && (condition))
#else
#define DCHECK(condition, message) CHECK(condition, message)
#endif
