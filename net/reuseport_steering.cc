#include "net/reuseport_steering.h"

#include <linux/filter.h>
#include <netinet/in.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <span>

#include "common/check.h"

namespace coapgate::net {
namespace {

// What a reuseport CBPF program sees (net/core/sock_reuseport.c, run_bpf_filter): the kernel
// temporarily pulls skb->data past the UDP header, so offset 0 is the first payload byte (the
// selftest tools/testing/selftests/net/reuseport_bpf.c steers on the payload's first word).
// The IP header is reached through negative offsets: SKF_NET_OFF + n is byte n of the network
// header (bpf_internal_load_pointer_neg_helper). Word loads (BPF_W|BPF_ABS) read big-endian,
// so the C++ side builds its words the same way.
constexpr uint32_t Net(uint32_t offset) noexcept {
  return static_cast<uint32_t>(SKF_NET_OFF) + offset;
}
constexpr uint32_t kIpVersionByte = 0;     // both headers: version in the high nibble
constexpr uint32_t kIpv4Source = 12;       // RFC 791: 4 bytes, options come after
constexpr uint32_t kIpv6Source = 8;        // RFC 8200: 16 bytes, extension headers after
constexpr uint32_t kIpv4MappedMark = 0xffff;  // word 2 of ::ffff:a.b.c.d (RFC 4291 §2.5.5.2)

// The hash: murmur3's fmix32, chained over the address's words. Why this one:
//  - it needs only what classic BPF has (32-bit xor, logical right shift, multiply by a
//    constant) and no memory, just A and X: 11 instructions per word;
//  - it is a bijection in which every input bit reaches every output bit, so the modulo
//    (which for a power-of-two group keeps only the low bits) depends on the whole address:
//    127.0.0.x test fleets that differ in the last byte, real fleets that share a /16 or a
//    /64 and differ in a few host bits, all spread evenly (tests check 65,536 in a row);
//  - chaining h = fmix(h ^ word) over the four IPv6 words mixes all 128 bits, and an IPv4
//    address is the one-word case, so IPv4 and ::ffff:a.b.c.d are one hash.
// It is not a keyed PRF: `seed` only makes the mapping unknown in advance.
constexpr uint32_t kMixShift1 = 16;
constexpr uint32_t kMixMultiplier1 = 0x85ebca6b;
constexpr uint32_t kMixShift2 = 13;
constexpr uint32_t kMixMultiplier2 = 0xc2b2ae35;
constexpr uint32_t kMixShift3 = 16;

constexpr uint32_t Mix32(uint32_t h) noexcept {
  h ^= h >> kMixShift1;
  h *= kMixMultiplier1;
  h ^= h >> kMixShift2;
  h *= kMixMultiplier2;
  h ^= h >> kMixShift3;
  return h;
}

uint32_t LoadBigEndian32(const uint8_t* bytes) noexcept {
  return (static_cast<uint32_t>(bytes[0]) << 24) | (static_cast<uint32_t>(bytes[1]) << 16) |
         (static_cast<uint32_t>(bytes[2]) << 8) | static_cast<uint32_t>(bytes[3]);
}

// The address's words as the program hashes them: one for IPv4 and IPv4-mapped IPv6, four
// for other IPv6. Returns how many were written.
size_t AddressWords(const sockaddr* address, std::array<uint32_t, 4>& words) noexcept {
  if (address->sa_family == AF_INET) {
    sockaddr_in v4;
    std::memcpy(&v4, address, sizeof(v4));
    words[0] = LoadBigEndian32(reinterpret_cast<const uint8_t*>(&v4.sin_addr));
    return 1;
  }
  if (address->sa_family == AF_INET6) {
    sockaddr_in6 v6;
    std::memcpy(&v6, address, sizeof(v6));
    const auto* bytes = reinterpret_cast<const uint8_t*>(&v6.sin6_addr);
    for (size_t i = 0; i < 4; ++i) words[i] = LoadBigEndian32(bytes + 4 * i);
    if (words[0] == 0 && words[1] == 0 && words[2] == kIpv4MappedMark) {
      words[0] = words[3];
      return 1;
    }
    return 4;
  }
  return 0;
}

// A classic BPF program under construction, with forward jumps to labels patched when the
// label is placed (classic BPF jumps only forward).
class ProgramBuilder {
 public:
  enum Label : uint8_t { kIpv4, kIpv6, kLastWord, kNotIp, kLabelCount };

  void Emit(int code, uint32_t k) noexcept { Push(code, k); }

  // if (A == k) goto if_equal; else goto if_not (kNone: the next instruction).
  void JumpIfEqual(uint32_t k, int if_equal, int if_not) noexcept {
    const size_t at = Push(BPF_JMP | BPF_JEQ | BPF_K, k);
    Refer(if_equal, at, /*true_branch=*/true);
    Refer(if_not, at, /*true_branch=*/false);
  }
  void JumpAlways(Label label) noexcept {
    const size_t at = Push(BPF_JMP | BPF_JA, 0);
    CHECK(count_fixups_ < kMaxFixups, "more jumps than the steering program is sized for");
    fixups_[count_fixups_++] = {at, label, Fixup::kAlways};
  }

  void Place(Label label) noexcept {
    for (size_t i = 0; i < count_fixups_; ++i) {
      Fixup& f = fixups_[i];
      if (f.label != label || f.done) continue;
      const size_t distance = size_ - f.at - 1;
      sock_filter& insn = program_[f.at];
      if (f.kind == Fixup::kAlways) {
        insn.k = static_cast<uint32_t>(distance);
      } else {
        CHECK(distance <= UINT8_MAX, "the program is far shorter than 255 instructions");
        (f.kind == Fixup::kTrue ? insn.jt : insn.jf) = static_cast<uint8_t>(distance);
      }
      f.done = true;
    }
  }

  // A = Mix32(A), with X as scratch.
  void EmitMix() noexcept {
    EmitXorShift(kMixShift1);
    Emit(BPF_ALU | BPF_MUL | BPF_K, kMixMultiplier1);
    EmitXorShift(kMixShift2);
    Emit(BPF_ALU | BPF_MUL | BPF_K, kMixMultiplier2);
    EmitXorShift(kMixShift3);
  }

  [[nodiscard]] std::span<sock_filter> program() noexcept { return {program_.data(), size_}; }

  static constexpr int kNone = -1;

 private:
  struct Fixup {
    enum Kind : uint8_t { kTrue, kFalse, kAlways };
    size_t at;
    int label;
    Kind kind;
    bool done = false;
  };

  // BuildProgram emits 76: dispatch 4, IPv4-mapped 9, IPv6 1 + 3 x 14 + 3, IPv4 2, last
  // word 14, not IP 1. Room to spare, checked by assert.
  static constexpr size_t kCapacity = 96;
  static constexpr size_t kMaxFixups = 16;

  size_t Push(int code, uint32_t k) noexcept {
    CHECK(size_ < kCapacity, "more instructions than the steering program is sized for");
    program_[size_] = sock_filter{static_cast<uint16_t>(code), 0, 0, k};
    return size_++;
  }
  void Refer(int label, size_t at, bool true_branch) noexcept {
    if (label == kNone) return;
    CHECK(count_fixups_ < kMaxFixups, "more jumps than the steering program is sized for");
    fixups_[count_fixups_++] = {at, label, true_branch ? Fixup::kTrue : Fixup::kFalse};
  }
  void EmitXorShift(uint32_t shift) noexcept {  // A ^= A >> shift
    Emit(BPF_MISC | BPF_TAX, 0);
    Emit(BPF_ALU | BPF_RSH | BPF_K, shift);
    Emit(BPF_ALU | BPF_XOR | BPF_X, 0);
  }

  std::array<sock_filter, kCapacity> program_{};
  size_t size_ = 0;
  std::array<Fixup, kMaxFixups> fixups_{};
  size_t count_fixups_ = 0;
};

// The program, in the order a packet runs through it:
//   A = version nibble of the IP header
//   IPv4:            X = seed, A = source            -> last word
//   IPv6, ::ffff:/96: X = seed, A = source word 3     -> last word
//   IPv6 otherwise:  A = seed; for words 0..2: A = Mix32(A ^ word);
//                    X = A, A = source word 3         -> last word
//   last word:       A = Mix32(A ^ X) % group_size; return A
//   anything else:   return group_size (out of range: the kernel's 4-tuple hash decides)
// A load past the packet ends the program with 0 (socket 0); with a real IP header it cannot.
void BuildProgram(ProgramBuilder& b, uint32_t group_size, uint32_t seed) noexcept {
  using P = ProgramBuilder;
  b.Emit(BPF_LD | BPF_B | BPF_ABS, Net(kIpVersionByte));
  b.Emit(BPF_ALU | BPF_RSH | BPF_K, 4);
  b.JumpIfEqual(4, P::kIpv4, P::kNone);
  b.JumpIfEqual(6, P::kNone, P::kNotIp);
  // IPv6: an IPv4-mapped source (words 0, 1 zero, word 2 0x0000ffff) hashes as IPv4.
  b.Emit(BPF_LD | BPF_W | BPF_ABS, Net(kIpv6Source + 0));
  b.JumpIfEqual(0, P::kNone, P::kIpv6);
  b.Emit(BPF_LD | BPF_W | BPF_ABS, Net(kIpv6Source + 4));
  b.JumpIfEqual(0, P::kNone, P::kIpv6);
  b.Emit(BPF_LD | BPF_W | BPF_ABS, Net(kIpv6Source + 8));
  b.JumpIfEqual(kIpv4MappedMark, P::kNone, P::kIpv6);
  b.Emit(BPF_LDX | BPF_W | BPF_IMM, seed);
  b.Emit(BPF_LD | BPF_W | BPF_ABS, Net(kIpv6Source + 12));
  b.JumpAlways(P::kLastWord);

  b.Place(P::kIpv6);
  b.Emit(BPF_LD | BPF_W | BPF_IMM, seed);
  for (uint32_t word = 0; word < 3; ++word) {
    b.Emit(BPF_MISC | BPF_TAX, 0);
    b.Emit(BPF_LD | BPF_W | BPF_ABS, Net(kIpv6Source + 4 * word));
    b.Emit(BPF_ALU | BPF_XOR | BPF_X, 0);
    b.EmitMix();
  }
  b.Emit(BPF_MISC | BPF_TAX, 0);
  b.Emit(BPF_LD | BPF_W | BPF_ABS, Net(kIpv6Source + 12));
  b.JumpAlways(P::kLastWord);

  b.Place(P::kIpv4);
  b.Emit(BPF_LDX | BPF_W | BPF_IMM, seed);
  b.Emit(BPF_LD | BPF_W | BPF_ABS, Net(kIpv4Source));

  b.Place(P::kLastWord);
  b.Emit(BPF_ALU | BPF_XOR | BPF_X, 0);
  b.EmitMix();
  b.Emit(BPF_ALU | BPF_MOD | BPF_K, group_size);
  b.Emit(BPF_RET | BPF_A, 0);

  b.Place(P::kNotIp);
  b.Emit(BPF_RET | BPF_K, group_size);
}

}  // namespace

std::string_view ToString(SteeringErrc errc) noexcept {
  switch (errc) {
    case SteeringErrc::kBadGroupSize: return "group size must be 1..65535";
    case SteeringErrc::kBadFamily: return "family must be AF_INET or AF_INET6";
    case SteeringErrc::kFamilyMismatch: return "the socket is not of the given family";
    case SteeringErrc::kAttachFailed: return "SO_ATTACH_REUSEPORT_CBPF failed";
  }
  return "unknown steering error";
}

Result<void, SteeringError> AttachSourceSteering(int fd, uint32_t group_size, int family,
                                                 uint32_t seed) noexcept {
  if (group_size == 0 || group_size > kMaxGroupSize) {
    return Fail(SteeringError{SteeringErrc::kBadGroupSize, 0});
  }
  if (family != AF_INET && family != AF_INET6) {
    return Fail(SteeringError{SteeringErrc::kBadFamily, 0});
  }
  int domain = 0;
  socklen_t length = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) {
    return Fail(SteeringError{SteeringErrc::kFamilyMismatch, errno});
  }
  if (domain != family) return Fail(SteeringError{SteeringErrc::kFamilyMismatch, 0});
  if (group_size == 1) return {};

  ProgramBuilder builder;
  BuildProgram(builder, group_size, seed);
  const std::span<sock_filter> program = builder.program();
  const sock_fprog fprog{static_cast<unsigned short>(program.size()), program.data()};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof(fprog)) != 0) {
    return Fail(SteeringError{SteeringErrc::kAttachFailed, errno});
  }
  return {};
}

uint32_t ShardForAddress(const sockaddr* address, uint32_t shards, uint32_t seed) noexcept {
  std::array<uint32_t, 4> words{};
  const size_t count = AddressWords(address, words);
  if (count == 0) return shards;
  if (shards <= 1) return 0;
  uint32_t h = seed;
  for (size_t i = 0; i < count; ++i) h = Mix32(h ^ words[i]);
  return h % shards;
}

}  // namespace coapgate::net
