// HeapScope: per-endpoint accounting of wolfSSL's heap. wolfSSL allocates through hooks
// installed once per process (InstallHeapAccounting); while a HeapScope is alive on a thread,
// every byte wolfSSL allocates or frees on that thread (as malloc_usable_size reports it) is
// added to or taken from the scope's account. A DtlsEndpoint opens a scope around each of its
// calls; since all of a session's wolfSSL memory is allocated and freed inside the endpoint's
// own calls, its account balances to exactly what its live sessions hold.
//
// Thread contract: the account is thread_local; a scope affects only its own thread and
// nests (the previous account is restored when it ends). InstallHeapAccounting may be called
// from any thread, any number of times; it installs the hooks once, before wolfSSL_Init.
#pragma once

#include <cstdint>

namespace coapgate::dtls {

// Routes wolfSSL's malloc/free/realloc through the counting hooks. Idempotent.
void InstallHeapAccounting() noexcept;

class HeapScope {
 public:
  // `account` must outlive the scope; it is only read and written on this thread.
  explicit HeapScope(int64_t* account) noexcept;
  ~HeapScope();
  HeapScope(const HeapScope&) = delete;
  HeapScope& operator=(const HeapScope&) = delete;

 private:
  int64_t* saved_;
};

}  // namespace coapgate::dtls
