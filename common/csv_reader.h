// CsvReader: RFC 4180 text split into records, the one CSV reader of coapgate (the devices
// file, the Energy Saver's per-device template map, the load generator's key files).
//
// Accepted: a header row and records of comma-separated fields; LF or CRLF line ends; a last
// record without one; blank lines between records (skipped); quoted fields, which may hold
// commas, line breaks and doubled quotes (""); a UTF-8 byte order mark before the first
// record (spreadsheet exports start with one). Refused, with the physical line: a quote inside
// an unquoted field, text after a closing quote, an unterminated quoted field.
//
// Thread contract: one reader per thread; it reads `text` without copying it, so views from
// field() are valid until the next Next() and while the text is. Copies only a field holding
// an escaped quote, into a scratch buffer reused for every record. Control plane (it may grow
// its field vector), never used on the data plane.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace coapgate {

class CsvReader {
 public:
  enum class Status : uint8_t { kRecord, kEnd, kError };
  static constexpr size_t kNoField = std::numeric_limits<size_t>::max();

  explicit CsvReader(std::string_view text);

  // The next record, kEnd after the last one, or kError (then error() and error_line() say
  // why and where; the reader must not be used further).
  [[nodiscard]] Status Next();

  // 1-based physical line on which the current record starts.
  [[nodiscard]] size_t line() const noexcept { return record_line_; }
  [[nodiscard]] size_t field_count() const noexcept { return fields_.size(); }
  // REQUIRES: i < field_count().
  [[nodiscard]] std::string_view field(size_t i) const noexcept {
    const Field& f = fields_[i];
    return {(f.unescaped ? scratch_.data() : text_.data()) + f.begin, f.size};
  }
  // The index of the first field equal to `name` (for a header record), or kNoField.
  [[nodiscard]] size_t FindField(std::string_view name) const noexcept;

  [[nodiscard]] std::string_view error() const noexcept { return error_; }
  [[nodiscard]] size_t error_line() const noexcept { return error_line_; }

 private:
  struct Field {
    size_t begin;  // in text_, or in scratch_ if unescaped
    size_t size;
    bool unescaped;
  };

  bool ReadPlain();
  bool ReadQuoted();
  bool Failed(std::string_view why, size_t line);

  std::string_view text_;
  size_t pos_ = 0;
  size_t line_ = 1;
  size_t record_line_ = 1;
  std::vector<Field> fields_;
  std::string scratch_;
  std::string_view error_;
  size_t error_line_ = 0;
};

// "FILE:LINE: reason", the position format of every line-oriented file coapgate reads.
[[nodiscard]] std::string FileLineMessage(std::string_view file, size_t line,
                                          std::string_view reason);

}  // namespace coapgate
