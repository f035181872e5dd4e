#include "registry/device_registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <system_error>

#include "common/check.h"
#include "common/csv_reader.h"
#include "common/hash.h"
#include "common/hex.h"

namespace coapgate::registry {
namespace {

constexpr uint32_t kEmptySlot = std::numeric_limits<uint32_t>::max();

// Record::flags bits.
constexpr uint8_t kHasIp = 1;
constexpr uint8_t kActive = 2;
constexpr uint8_t kHexPsk = 4;

// Arena offsets and line numbers are uint32. The arena only ever holds a subset of the file's
// bytes, so refusing larger files makes overflow impossible (1M devices are ~70 MB).
constexpr size_t kMaxTextBytes = std::numeric_limits<uint32_t>::max() - 1;

// Keeps the tables non-empty, so probing needs no emptiness check on the hot path.
constexpr size_t kMinIndexSlots = 8;

// What error messages show of a bad value: enough for any valid one, short enough to keep the
// message one readable log line.
constexpr size_t kMaxShownValue = 48;

enum Column : uint8_t { kIccid, kImsi, kIp, kStatus, kPsk, kPskFormat, kColumnCount };
constexpr std::array<std::string_view, kColumnCount> kColumnNames = {
    "iccid", "imsi", "ip", "status", "psk", "psk_format"};
constexpr size_t kNoColumn = std::numeric_limits<size_t>::max();

// At most half full: a probe reads a record (the slots hold only indexes), so short probe
// sequences (~1.5 reads per hit, ~2.5 per miss with linear probing) are worth 4 bytes a slot.
size_t SlotsFor(size_t keys) { return std::bit_ceil(std::max(kMinIndexSlots, 2 * keys)); }

// Eight bytes per multiply rather than FNV-1a's one: an ICCID is three words.
uint64_t HashIccid(std::string_view s) noexcept {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, s.data() + i, 8);
    h = (h ^ word) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  if (i < s.size()) {
    uint64_t word = 0;
    std::memcpy(&word, s.data() + i, s.size() - i);
    h = (h ^ word) * 0xff51afd7ed558ccdULL;
  }
  return Mix64(h);
}

// The slot holding a record for which `matches` is true, or else the empty slot that ends the
// probe sequence (where such a record would go). Relies on the Index invariant that at least
// one slot is empty.
template <class Matches>
size_t ProbeSlot(const std::vector<uint32_t>& slots, size_t mask, uint64_t hash,
                 Matches matches) noexcept {
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const uint32_t r = slots[i];
    if (r == kEmptySlot || matches(r)) return i;
  }
}

bool IsDigits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// `lower` is lower-case ASCII.
bool EqualsIgnoreCase(std::string_view s, std::string_view lower) {
  return s.size() == lower.size() &&
         std::equal(s.begin(), s.end(), lower.begin(), [](char a, char b) {
           return (a >= 'A' && a <= 'Z' ? static_cast<char>(a - 'A' + 'a') : a) == b;
         });
}

// A value as an error message shows it: printable ASCII, anything else as \xNN (a quoted
// field may hold a newline, and the message must stay one line), truncated.
std::string Printable(std::string_view value) {
  if (value.empty()) return "(empty)";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < value.size() && i < kMaxShownValue; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (value.size() > kMaxShownValue) out += "...";
  return out;
}

// Upper bound on the number of records: one per line.
size_t CountLines(std::string_view text) {
  size_t lines = 1;
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p != end) {
    const void* nl = std::memchr(p, '\n', static_cast<size_t>(end - p));
    if (nl == nullptr) break;
    ++lines;
    p = static_cast<const char*>(nl) + 1;
  }
  return lines;
}

}  // namespace

DeviceRegistry::Builder::Builder(std::string_view name, size_t expected_rows,
                                 size_t expected_text_bytes)
    : name_(name), registry_(new DeviceRegistry()) {
  DeviceRegistry& r = *registry_;
  r.arena_.reserve(expected_text_bytes);
  r.records_.reserve(expected_rows);
  lines_.reserve(expected_rows);
  Allocate(r.by_ip_, expected_rows);
  Allocate(r.by_iccid_, expected_rows);
}

DeviceRegistry::Builder::~Builder() = default;

Result<void, std::string> DeviceRegistry::Builder::Add(const Row& row, size_t line) {
  CHECK(registry_ != nullptr, "Builder::Add after Finish");
  const std::string_view iccid = row.iccid;
  if (iccid.size() < kMinIccidLength || iccid.size() > kMaxIccidLength || !IsDigits(iccid)) {
    return Fail(FieldError(line, kIccid, "must be 18 to 22 digits", iccid));
  }
  const std::string_view imsi = row.imsi;
  if (!imsi.empty() &&
      (imsi.size() < kMinImsiLength || imsi.size() > kMaxImsiLength || !IsDigits(imsi))) {
    return Fail(FieldError(line, kImsi, "must be empty or 5 to 15 digits", imsi));
  }
  std::optional<net::IpAddress> ip;
  if (!row.ip.empty()) {
    ip = net::IpAddress::Parse(row.ip);
    if (!ip) return Fail(FieldError(line, kIp, "not an IPv4 or IPv6 address", row.ip));
  }
  const bool active = EqualsIgnoreCase(row.status, "active");
  PskFormat format = PskFormat::kString;
  if (!row.psk_format.empty()) {
    if (EqualsIgnoreCase(row.psk_format, "hex")) {
      format = PskFormat::kHex;
    } else if (!EqualsIgnoreCase(row.psk_format, "string")) {
      return Fail(FieldError(line, kPskFormat, "must be empty, string or hex", row.psk_format));
    }
  }
  // The key itself never appears in a message: errors end up in logs.
  const std::string_view psk = row.psk;
  if (psk.size() > kMaxPskLength) {
    return Fail(
        LineError(line, "psk: longer than 64 bytes (" + std::to_string(psk.size()) + " bytes)"));
  }
  if (format == PskFormat::kHex && !IsStrictHex(psk)) {
    return Fail(LineError(line,
                          "psk: psk_format is hex but psk is not a non-empty, "
                          "even-length run of hex digits (" +
                              std::to_string(psk.size()) + " characters)"));
  }

  DeviceRegistry& r = *registry_;
  if (r.arena_.size() + iccid.size() + imsi.size() + psk.size() > kMaxTextBytes) {
    return Fail(LineError(line, "registry too large (its text exceeds 4 GiB)"));
  }
  // Keep both indexes at most half full as they fill (a source that cannot count its rows
  // up front, or guessed low); the ip index is sized like the ICCID one: an upper bound.
  if (SlotsFor(r.records_.size() + 1) > r.by_iccid_.slots.size()) {
    RebuildIpIndex(r.records_.size() + 1);
    RebuildIccidIndex(r.records_.size() + 1);
  }
  const auto index = static_cast<uint32_t>(r.records_.size());
  const size_t iccid_slot =
      ProbeSlot(r.by_iccid_.slots, r.by_iccid_.mask, HashIccid(iccid),
                [&](uint32_t other) { return r.IccidOf(r.records_[other]) == iccid; });
  if (const uint32_t other = r.by_iccid_.slots[iccid_slot]; other != kEmptySlot) {
    return Fail(FieldError(line, kIccid, "duplicate", iccid) + ", first on line " +
                std::to_string(lines_[other]));
  }
  if (ip) {
    const size_t ip_slot = ProbeSlot(r.by_ip_.slots, r.by_ip_.mask, ip->Hash(),
                                     [&](uint32_t other) { return r.records_[other].ip == *ip; });
    if (const uint32_t other = r.by_ip_.slots[ip_slot]; other != kEmptySlot) {
      return Fail(FieldError(line, kIp, "duplicate", row.ip) +
                  " (two devices cannot share an address), first on line " +
                  std::to_string(lines_[other]));
    }
    r.by_ip_.slots[ip_slot] = index;
  }
  r.by_iccid_.slots[iccid_slot] = index;

  Record record;
  record.ip = ip.value_or(net::IpAddress());
  record.text_offset = static_cast<uint32_t>(r.arena_.size());
  record.iccid_length = static_cast<uint8_t>(iccid.size());
  record.imsi_length = static_cast<uint8_t>(imsi.size());
  record.psk_length = static_cast<uint8_t>(psk.size());
  record.flags = static_cast<uint8_t>((ip ? kHasIp : 0) | (active ? kActive : 0) |
                                      (format == PskFormat::kHex ? kHexPsk : 0));
  r.arena_.insert(r.arena_.end(), iccid.begin(), iccid.end());
  r.arena_.insert(r.arena_.end(), imsi.begin(), imsi.end());
  r.arena_.insert(r.arena_.end(), psk.begin(), psk.end());
  r.records_.push_back(record);
  lines_.push_back(static_cast<uint32_t>(std::min<size_t>(line, UINT32_MAX)));
  return {};
}

std::shared_ptr<const DeviceRegistry> DeviceRegistry::Builder::Finish() && {
  CHECK(registry_ != nullptr, "Builder::Finish twice");
  // Right-size what was reserved for the worst case (the expected rows, every device with an
  // address): the snapshot lives until the next reload.
  DeviceRegistry& r = *registry_;
  r.arena_.shrink_to_fit();
  r.records_.shrink_to_fit();
  size_t with_ip = 0;
  for (const Record& record : r.records_) with_ip += (record.flags & kHasIp) != 0;
  if (SlotsFor(with_ip) < r.by_ip_.slots.size()) RebuildIpIndex(with_ip);
  if (SlotsFor(r.records_.size()) < r.by_iccid_.slots.size()) {
    RebuildIccidIndex(r.records_.size());
  }
  r.handshakes_ = std::make_unique<std::atomic<uint64_t>[]>(r.records_.size());  // zeroed
  r.registrations_ = std::make_unique<std::atomic<uint8_t>[]>(r.records_.size());  // kUnknown
  return std::shared_ptr<const DeviceRegistry>(std::move(registry_));
}

void DeviceRegistry::Builder::Allocate(Index& index, size_t keys) {
  index.slots.assign(SlotsFor(keys), kEmptySlot);
  index.mask = index.slots.size() - 1;
}

// Keys are known to be distinct here, so an insert only needs the first empty slot.
void DeviceRegistry::Builder::Insert(Index& index, uint64_t hash, uint32_t record) {
  const size_t slot = ProbeSlot(index.slots, index.mask, hash, [](uint32_t) { return false; });
  index.slots[slot] = record;
}

void DeviceRegistry::Builder::RebuildIpIndex(size_t keys) {
  DeviceRegistry& r = *registry_;
  Index index;
  Allocate(index, keys);
  for (uint32_t i = 0; i < r.records_.size(); ++i) {
    if (r.records_[i].flags & kHasIp) Insert(index, r.records_[i].ip.Hash(), i);
  }
  r.by_ip_ = std::move(index);
}

void DeviceRegistry::Builder::RebuildIccidIndex(size_t keys) {
  DeviceRegistry& r = *registry_;
  Index index;
  Allocate(index, keys);
  for (uint32_t i = 0; i < r.records_.size(); ++i) {
    Insert(index, HashIccid(r.IccidOf(r.records_[i])), i);
  }
  r.by_iccid_ = std::move(index);
}

std::string DeviceRegistry::Builder::LineError(size_t line, std::string_view reason) const {
  return FileLineMessage(name_, line, reason);
}

std::string DeviceRegistry::Builder::FieldError(size_t line, uint8_t column,
                                                std::string_view reason,
                                                std::string_view value) const {
  std::string why(kColumnNames[column]);
  why += ": ";
  why += reason;
  why += ": ";
  why += Printable(value);
  return LineError(line, why);
}

// The CSV file's reader: the header decides which field is which column, then every row goes
// to a Builder; the first problem, in file order, ends the load.
class DeviceRegistry::Loader {
 public:
  using LoadResult = Result<std::shared_ptr<const DeviceRegistry>, Error>;

  Loader(std::string_view text, std::string_view name) : text_(text), name_(name) {}

  LoadResult Run() {
    if (text_.size() > kMaxTextBytes) {
      return FailBadInput(std::string(name_) + ": file too large (" +
                          std::to_string(text_.size()) + " bytes; at most 4 GiB)");
    }
    CsvReader reader(text_);
    if (auto header = ReadHeader(reader); !header) return FailBadInput(std::move(header).error());

    // One device per line at most, and the fields are a subset of the text: the builder
    // never grows.
    Builder builder(name_, CountLines(text_), text_.size());
    for (;;) {
      const CsvReader::Status status = reader.Next();
      if (status == CsvReader::Status::kEnd) break;
      if (status == CsvReader::Status::kError) {
        return FailBadInput(FileLineMessage(name_, reader.error_line(), reader.error()));
      }
      const size_t line = reader.line();
      if (reader.field_count() != field_count_) {
        return FailBadInput(FileLineMessage(
            name_, line,
            "expected " + std::to_string(field_count_) + " fields as in the header, found " +
                std::to_string(reader.field_count())));
      }
      const auto field = [&](Column c) { return reader.field(column_[c]); };
      const Builder::Row row{field(kIccid), field(kImsi),  field(kIp),
                             field(kStatus), field(kPsk), field(kPskFormat)};
      if (auto added = builder.Add(row, line); !added) {
        return FailBadInput(std::move(added).error());
      }
    }
    return std::move(builder).Finish();
  }

 private:
  Result<bool, std::string> ReadHeader(CsvReader& reader) {
    const CsvReader::Status status = reader.Next();
    if (status == CsvReader::Status::kEnd) {
      return Fail(std::string(name_) + ": empty file: no header row");
    }
    if (status == CsvReader::Status::kError) {
      return Fail(FileLineMessage(name_, reader.error_line(), reader.error()));
    }
    column_.fill(kNoColumn);
    field_count_ = reader.field_count();
    for (size_t i = 0; i < field_count_; ++i) {
      const std::string_view name = reader.field(i);
      // Other columns are allowed and ignored: later features add their own.
      const auto* known = std::find(kColumnNames.begin(), kColumnNames.end(), name);
      if (known == kColumnNames.end()) continue;
      size_t& column = column_[static_cast<size_t>(known - kColumnNames.begin())];
      if (column != kNoColumn) {
        return Fail(FileLineMessage(name_, reader.line(),
                                    "header: column " + std::string(name) + " appears twice"));
      }
      column = i;
    }
    std::string missing;
    for (size_t c = 0; c < kColumnCount; ++c) {
      if (column_[c] != kNoColumn) continue;
      missing += missing.empty() ? "" : ", ";
      missing += kColumnNames[c];
    }
    if (!missing.empty()) {
      return Fail(FileLineMessage(name_, reader.line(),
                                  "header: missing required column(s): " + missing +
                                      " (the header must name iccid, imsi, ip, status, "
                                      "psk, psk_format)"));
    }
    return true;
  }

  std::string_view text_;
  std::string_view name_;
  std::array<size_t, kColumnCount> column_{};  // header position of each required column
  size_t field_count_ = 0;
};

Result<std::shared_ptr<const DeviceRegistry>, Error> DeviceRegistry::ParseCsv(
    std::string_view text, std::string_view name) {
  return Loader(text, name).Run();
}

Result<std::shared_ptr<const DeviceRegistry>, Error> DeviceRegistry::LoadCsvFile(
    const std::string& path) {
  const auto failure = [&](std::string_view what, int error) {
    std::string out = path + ": " + std::string(what);
    if (error != 0) out += ": " + std::error_code(error, std::generic_category()).message();
    return out;
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FailEnvironment(failure("cannot open", errno));
  // One read of the whole file into one buffer: parsing then works on views into it.
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return FailEnvironment(failure("cannot stat", errno));
  // Sizing the buffer from st_size needs a regular file (a FIFO or directory would read as
  // empty or fail late with a less helpful message).
  if (!S_ISREG(st.st_mode)) return FailBadInput(failure("not a regular file", 0));
  const auto size = static_cast<size_t>(st.st_size);
  if (size > kMaxTextBytes) {
    return FailBadInput(failure("file too large (" + std::to_string(size) + " bytes; at most 4 GiB)", 0));
  }
  auto buffer = std::make_unique_for_overwrite<char[]>(size == 0 ? 1 : size);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, buffer.get() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailEnvironment(failure("cannot read", errno));
    if (n == 0) break;  // truncated while we read: parse what is there
    done += static_cast<size_t>(n);
  }
  return ParseCsv(std::string_view(buffer.get(), done), path);
}

std::string_view DeviceRegistry::IccidOf(const Record& r) const noexcept {
  return {arena_.data() + r.text_offset, r.iccid_length};
}

DeviceView DeviceRegistry::ViewOf(const Record& r) const noexcept {
  const char* const text = arena_.data() + r.text_offset;
  DeviceView view{};
  view.iccid = {text, r.iccid_length};
  view.imsi = {text + r.iccid_length, r.imsi_length};
  if (r.flags & kHasIp) view.ip = r.ip;
  view.active = (r.flags & kActive) != 0;
  view.psk = {text + r.iccid_length + r.imsi_length, r.psk_length};
  view.psk_format = (r.flags & kHexPsk) != 0 ? PskFormat::kHex : PskFormat::kString;
  view.index = static_cast<uint32_t>(&r - records_.data());
  return view;
}

DeviceView DeviceRegistry::Get(size_t index) const noexcept { return ViewOf(records_[index]); }

std::optional<DeviceView> DeviceRegistry::FindByIp(const net::IpAddress& ip) const noexcept {
  const size_t slot = ProbeSlot(by_ip_.slots, by_ip_.mask, ip.Hash(),
                                [&](uint32_t r) { return records_[r].ip == ip; });
  const uint32_t r = by_ip_.slots[slot];
  if (r == kEmptySlot) return std::nullopt;
  return ViewOf(records_[r]);
}

std::optional<DeviceView> DeviceRegistry::FindByIccid(std::string_view iccid) const noexcept {
  const size_t slot = ProbeSlot(by_iccid_.slots, by_iccid_.mask, HashIccid(iccid),
                                [&](uint32_t r) { return IccidOf(records_[r]) == iccid; });
  const uint32_t r = by_iccid_.slots[slot];
  if (r == kEmptySlot) return std::nullopt;
  return ViewOf(records_[r]);
}

size_t DeviceRegistry::MemoryBytes() const noexcept {
  return sizeof(*this) + arena_.capacity() + records_.capacity() * sizeof(Record) +
         (by_ip_.slots.capacity() + by_iccid_.slots.capacity()) * sizeof(uint32_t) +
         records_.size() * (sizeof(std::atomic<uint64_t>) + sizeof(std::atomic<uint8_t>));
}

void DeviceRegistry::InheritActivity(const DeviceRegistry& previous) const noexcept {
  for (uint32_t i = 0; i < records_.size(); ++i) {
    const std::optional<DeviceView> before = previous.FindByIccid(IccidOf(records_[i]));
    if (!before) continue;
    StoreRequestActivity(i, previous.LoadRequestActivity(before->index));
    StoreHandshakeActivity(i, previous.LoadHandshakeActivity(before->index));
    if (previous.LoadRegistration(before->index) == Registration::kRegistered) {
      MarkRegistered(i);
    }
  }
}

}  // namespace coapgate::registry
