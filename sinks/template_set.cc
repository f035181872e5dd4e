#include "sinks/template_set.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/csv_reader.h"

namespace coapgate::sinks {
namespace {

// The reference system limits template bodies to 64 KiB (reference §5.1).
constexpr size_t kMaxTemplateBytes = 64 * 1024;

Result<std::string, Error> ReadFile(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return FailEnvironment(path + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  if (s.size() > limit) {
    return FailBadInput(path + ": larger than " + std::to_string(limit) + " bytes");
  }
  return s;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<TemplateSet::ProgramPtr, Error> LoadTemplateFile(const std::string& path) {
  auto text = ReadFile(path, kMaxTemplateBytes);
  if (!text) return tl::unexpected<Error>(std::move(text).error());
  auto program = energysaver::CompileTemplate(*text);
  if (!program) return FailBadInput(path + ": " + program.error());
  return *program;
}

Result<std::shared_ptr<const TemplateSet>, Error> TemplateSet::Load(
    const std::string& coap_template, const std::string& device_templates) {
  auto set = std::make_shared<TemplateSet>();
  if (!coap_template.empty()) {
    auto program = LoadTemplateFile(coap_template);
    if (!program) return tl::unexpected<Error>(std::move(program).error());
    set->global_ = *program;
  }
  if (device_templates.empty()) return std::shared_ptr<const TemplateSet>(std::move(set));

  // `iccid,template` with exactly that header; the template column is a path. Read with the
  // devices file's CSV reader (quoting, CRLF); unquoted fields are also trimmed of spaces and
  // tabs, as people write them by hand.
  auto text = ReadFile(device_templates, size_t{1} << 30);
  if (!text) return tl::unexpected<Error>(std::move(text).error());
  std::unordered_map<std::string, ProgramPtr> compiled;
  CsvReader reader(*text);
  bool header = true;
  for (;;) {
    const CsvReader::Status status = reader.Next();
    if (status == CsvReader::Status::kEnd) break;
    if (status == CsvReader::Status::kError) {
      return FailBadInput(FileLineMessage(device_templates, reader.error_line(), reader.error()));
    }
    const auto where = [&] { return device_templates + ":" + std::to_string(reader.line()) + ": "; };
    if (reader.field_count() != 2) return FailBadInput(where() + "expected two fields: iccid,template");
    const std::string iccid(Trim(reader.field(0)));
    const std::string path(Trim(reader.field(1)));
    if (header) {
      if (iccid != "iccid" || path != "template") {
        return FailBadInput(where() + "the header must be \"iccid,template\"");
      }
      header = false;
      continue;
    }
    if (iccid.empty() || path.empty()) {
      return FailBadInput(where() + "iccid and template are required");
    }
    auto [it, inserted] = compiled.try_emplace(path);
    if (inserted) {
      auto program = LoadTemplateFile(path);
      if (!program) {
        return tl::unexpected<Error>(
            Error{program.error().kind, where() + std::move(program).error().message});
      }
      it->second = *program;
    }
    if (!set->by_iccid_.try_emplace(iccid, it->second).second) {
      return FailBadInput(where() + "iccid " + iccid + " is listed twice");
    }
  }
  if (header) {
    return FailBadInput(device_templates + ": empty (the header \"iccid,template\" is missing)");
  }
  return std::shared_ptr<const TemplateSet>(std::move(set));
}

const TemplateSet::ProgramPtr& TemplateSet::For(std::string_view iccid) const noexcept {
  if (!by_iccid_.empty()) {
    const auto it = by_iccid_.find(iccid);
    if (it != by_iccid_.end()) return it->second;
  }
  return global_;
}

}  // namespace coapgate::sinks
