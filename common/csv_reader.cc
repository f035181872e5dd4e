#include "common/csv_reader.h"

#include <algorithm>
#include <cstring>

namespace coapgate {
namespace {

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

}  // namespace

CsvReader::CsvReader(std::string_view text) : text_(text) {
  if (text_.starts_with(kUtf8Bom)) pos_ = kUtf8Bom.size();
}

CsvReader::Status CsvReader::Next() {
  const size_t n = text_.size();
  while (pos_ < n) {
    if (text_[pos_] == '\n') {
      ++pos_;
    } else if (text_[pos_] == '\r' && pos_ + 1 < n && text_[pos_ + 1] == '\n') {
      pos_ += 2;
    } else {
      break;
    }
    ++line_;
  }
  if (pos_ == n) return Status::kEnd;
  record_line_ = line_;
  fields_.clear();
  scratch_.clear();
  for (;;) {
    const bool ok = pos_ < n && text_[pos_] == '"' ? ReadQuoted() : ReadPlain();
    if (!ok) return Status::kError;
    if (pos_ == n) return Status::kRecord;
    if (text_[pos_] == ',') {
      ++pos_;
      continue;
    }
    // Both field readers stop only at ',', "\n", "\r\n" or the end.
    pos_ += text_[pos_] == '\r' ? 2 : 1;
    ++line_;
    return Status::kRecord;
  }
}

size_t CsvReader::FindField(std::string_view name) const noexcept {
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (field(i) == name) return i;
  }
  return kNoField;
}

bool CsvReader::ReadPlain() {
  const char* const begin = text_.data() + pos_;
  const char* const end = text_.data() + text_.size();
  const char* p = begin;
  while (p != end && *p != ',' && *p != '\n' && *p != '"') ++p;
  if (p != end && *p == '"') {
    return Failed("'\"' inside an unquoted field (quote the whole field, doubling the '\"')",
                  line_);
  }
  auto size = static_cast<size_t>(p - begin);
  if (p != end && *p == '\n' && size > 0 && p[-1] == '\r') --size;  // CRLF ends the line
  fields_.push_back({pos_, size, false});
  pos_ += size;
  return true;
}

bool CsvReader::ReadQuoted() {
  const size_t n = text_.size();
  const size_t field_line = line_;
  const size_t scratch_begin = scratch_.size();
  bool unescaped = false;
  size_t segment = pos_ + 1;  // start of the text not yet consumed
  for (;;) {
    const void* found = std::memchr(text_.data() + segment, '"', n - segment);
    if (found == nullptr) return Failed("unterminated quoted field", field_line);
    const auto quote = static_cast<size_t>(static_cast<const char*>(found) - text_.data());
    line_ += static_cast<size_t>(std::count(text_.begin() + static_cast<ptrdiff_t>(segment),
                                            text_.begin() + static_cast<ptrdiff_t>(quote), '\n'));
    if (quote + 1 < n && text_[quote + 1] == '"') {
      scratch_.append(text_.data() + segment, quote + 1 - segment);  // keeps one quote
      unescaped = true;
      segment = quote + 2;
      continue;
    }
    if (unescaped) {
      scratch_.append(text_.data() + segment, quote - segment);
      fields_.push_back({scratch_begin, scratch_.size() - scratch_begin, true});
    } else {
      fields_.push_back({pos_ + 1, quote - pos_ - 1, false});
    }
    pos_ = quote + 1;
    if (pos_ == n || text_[pos_] == ',' || text_[pos_] == '\n' ||
        (text_[pos_] == '\r' && pos_ + 1 < n && text_[pos_ + 1] == '\n')) {
      return true;
    }
    return Failed("unexpected text after a closing quote", line_);
  }
}

bool CsvReader::Failed(std::string_view why, size_t line) {
  error_ = why;
  error_line_ = line;
  return false;
}

std::string FileLineMessage(std::string_view file, size_t line, std::string_view reason) {
  std::string out(file);
  out += ':';
  out += std::to_string(line);
  out += ": ";
  out += reason;
  return out;
}

}  // namespace coapgate
