#include "dtls/heap_scope.h"

#include <malloc.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/memory.h>

#include <cstdlib>
#include <mutex>

namespace coapgate::dtls {
namespace {

thread_local int64_t* t_heap_account = nullptr;

void* CountingMalloc(size_t size) {
  void* p = std::malloc(size);
  if (p != nullptr && t_heap_account != nullptr) {
    *t_heap_account += static_cast<int64_t>(malloc_usable_size(p));
  }
  return p;
}

void CountingFree(void* p) {
  if (p != nullptr && t_heap_account != nullptr) {
    *t_heap_account -= static_cast<int64_t>(malloc_usable_size(p));
  }
  std::free(p);
}

void* CountingRealloc(void* p, size_t size) {
  const auto before =
      p != nullptr && t_heap_account != nullptr ? static_cast<int64_t>(malloc_usable_size(p)) : 0;
  void* q = std::realloc(p, size);
  if (t_heap_account != nullptr && (q != nullptr || size == 0)) {
    *t_heap_account += (q != nullptr ? static_cast<int64_t>(malloc_usable_size(q)) : 0) - before;
  }
  return q;
}

}  // namespace

void InstallHeapAccounting() noexcept {
  static std::once_flag installed;
  std::call_once(installed,
                 [] { wolfSSL_SetAllocators(CountingMalloc, CountingFree, CountingRealloc); });
}

HeapScope::HeapScope(int64_t* account) noexcept : saved_(t_heap_account) {
  t_heap_account = account;
}

HeapScope::~HeapScope() { t_heap_account = saved_; }

}  // namespace coapgate::dtls
