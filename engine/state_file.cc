#include "engine/state_file.h"

#include <sys/random.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include <cstring>

#include "common/atomic_file.h"
#include "common/hex.h"

namespace coapgate::engine {
namespace {

constexpr char kMagic[4] = {'C', 'G', 'S', 'F'};
constexpr uint8_t kVersion = 1;
constexpr size_t kHeaderSize = 4 + 4 + 8 + 12;
constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;

const byte* Bytes(const void* p) { return static_cast<const byte*>(p); }

// Wipes a string that held plaintext state before it is freed.
void Wipe(std::string& s) {
  volatile char* p = s.data();
  for (size_t i = 0; i < s.size(); ++i) p[i] = 0;
}

}  // namespace

Result<StateKey, std::string> ParseStateKey(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.remove_suffix(1);
  }
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  StateKey key;
  if (text.size() != 64) {
    return Fail("must hold 64 hex digits (a 256-bit key, e.g. `openssl rand -hex 32`), not " +
                std::to_string(text.size()) + " characters");
  }
  auto decoded = DecodeHex(text, key);
  if (!decoded || *decoded != key.size()) {
    return Fail(std::string("must hold 64 hex digits, and nothing else"));
  }
  return key;
}

std::string SealState(const StateKey& key, std::string_view plaintext, uint64_t created_unix_ms) {
  std::string out;
  out.append(kMagic, 4);
  out.push_back(static_cast<char>(kVersion));
  out.append(3, '\0');
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(created_unix_ms >> (8 * i)));
  std::array<byte, kNonceSize> nonce;
  if (getrandom(nonce.data(), nonce.size(), 0) != static_cast<ssize_t>(nonce.size())) return {};
  out.append(reinterpret_cast<const char*>(nonce.data()), nonce.size());
  out.resize(kHeaderSize + plaintext.size() + kTagSize);
  Aes aes;
  if (wc_AesInit(&aes, nullptr, INVALID_DEVID) != 0) return {};
  const bool sealed =
      wc_AesGcmSetKey(&aes, Bytes(key.data()), static_cast<word32>(key.size())) == 0 &&
      wc_AesGcmEncrypt(&aes, reinterpret_cast<byte*>(out.data()) + kHeaderSize,
                       Bytes(plaintext.data()), static_cast<word32>(plaintext.size()),
                       nonce.data(), kNonceSize,
                       reinterpret_cast<byte*>(out.data()) + kHeaderSize + plaintext.size(),
                       kTagSize, Bytes(out.data()), kHeaderSize) == 0;
  wc_AesFree(&aes);
  if (!sealed) return {};
  return out;
}

Result<OpenedState, StateRefusal> OpenState(const StateKey& key, std::span<const std::byte> file,
                                            uint64_t now_unix_ms, uint32_t max_age_s) {
  if (file.size() < 4 || std::memcmp(file.data(), kMagic, 4) != 0) {
    return Fail(StateRefusal::kBadMagic);
  }
  if (file.size() < 5) return Fail(StateRefusal::kTruncated);
  if (static_cast<uint8_t>(file[4]) != kVersion) return Fail(StateRefusal::kUnknownVersion);
  if (file.size() < kHeaderSize + kTagSize) return Fail(StateRefusal::kTruncated);
  OpenedState opened;
  for (int i = 0; i < 8; ++i) {
    opened.created_unix_ms |= uint64_t{static_cast<uint8_t>(file[8 + i])} << (8 * i);
  }
  const size_t size = file.size() - kHeaderSize - kTagSize;
  opened.plaintext.resize(size);
  Aes aes;
  if (wc_AesInit(&aes, nullptr, INVALID_DEVID) != 0) return Fail(StateRefusal::kBadKeyOrCorrupt);
  const bool ok =
      wc_AesGcmSetKey(&aes, Bytes(key.data()), static_cast<word32>(key.size())) == 0 &&
      wc_AesGcmDecrypt(&aes, reinterpret_cast<byte*>(opened.plaintext.data()),
                       Bytes(file.data()) + kHeaderSize, static_cast<word32>(size),
                       Bytes(file.data()) + 16, kNonceSize,
                       Bytes(file.data()) + kHeaderSize + size, kTagSize, Bytes(file.data()),
                       kHeaderSize) == 0;
  wc_AesFree(&aes);
  if (!ok) {
    Wipe(opened.plaintext);
    return Fail(StateRefusal::kBadKeyOrCorrupt);
  }
  const uint64_t max_age_ms = uint64_t{max_age_s} * 1000;
  const bool future = opened.created_unix_ms > now_unix_ms;
  opened.age_ms = future ? opened.created_unix_ms - now_unix_ms : now_unix_ms - opened.created_unix_ms;
  if (opened.age_ms > max_age_ms) {
    Wipe(opened.plaintext);
    return Fail(StateRefusal::kTooOld);
  }
  if (future) opened.age_ms = 0;
  return opened;
}

Result<void, Error> SaveStateFile(const std::string& path, const StateKey& key,
                                  std::string_view plaintext, uint64_t created_unix_ms) {
  const std::string sealed = SealState(key, plaintext, created_unix_ms);
  if (sealed.empty()) return FailEnvironment(path + ": cannot encrypt the restart state");
  return WriteFileAtomically(path, sealed);
}

}  // namespace coapgate::engine
