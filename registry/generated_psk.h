// The keys GET /bootstrap generates (docs/bootstrap-and-dtls.md "Which key"): their length,
// alphabet and generator, shared by every KeyStore (PskStore, PostgresKeyStore) so that a
// device gets the same kind of key whichever backend holds it.
//
// Thread contract: any thread; GenerateBootstrapKey allocates and may block in getrandom(2)
// until the kernel's pool is initialised (only at boot): the bootstrap worker calls it, never a
// shard.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coapgate::registry {

// Generated keys are this long: the most the reference allows (§3.2: Zephyr hex-encodes the
// key into a 40-byte buffer, so at most 19 characters), for the most entropy.
inline constexpr size_t kGeneratedPskLength = 19;
// ... drawn uniformly from these 62 characters: 19 x log2(62) = 113 bits. Letters and digits
// only, so a key survives every way devices carry it: CSV and comma-split replies, quoted AT
// command arguments, JSON and C strings, shells, without escaping.
inline constexpr std::string_view kGeneratedPskAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

// A fresh key: kGeneratedPskLength characters of kGeneratedPskAlphabet from getrandom(2), each
// equally likely. Fails only when getrandom does (the text says why).
[[nodiscard]] Result<std::string, std::string> GenerateBootstrapKey();

}  // namespace coapgate::registry
