#include "registry/generated_psk.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

namespace coapgate::registry {

// getrandom(2) bytes mapped onto the alphabet by rejection sampling: bytes >= 248 (= 4 x 62)
// are dropped, so every character is equally likely.
Result<std::string, std::string> GenerateBootstrapKey() {
  constexpr unsigned kAlphabetSize = kGeneratedPskAlphabet.size();
  constexpr unsigned kLimit = 256 - 256 % kAlphabetSize;
  std::string key;
  key.reserve(kGeneratedPskLength);
  unsigned char random[32];
  while (key.size() < kGeneratedPskLength) {
    const ssize_t n = getrandom(random, sizeof(random), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(std::string("getrandom: ") + std::strerror(errno));
    }
    for (ssize_t i = 0; i < n && key.size() < kGeneratedPskLength; ++i) {
      if (random[i] < kLimit) key.push_back(kGeneratedPskAlphabet[random[i] % kAlphabetSize]);
    }
  }
  return key;
}

}  // namespace coapgate::registry
