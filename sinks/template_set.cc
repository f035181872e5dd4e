#include "sinks/template_set.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace coapgate::sinks {
namespace {

// The reference system limits template bodies to 64 KiB (reference §5.1).
constexpr size_t kMaxTemplateBytes = 64 * 1024;

Result<std::string, std::string> ReadFile(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(path + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  if (s.size() > limit) return Fail(path + ": larger than " + std::to_string(limit) + " bytes");
  return s;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

Result<TemplateSet::ProgramPtr, std::string> LoadTemplateFile(const std::string& path) {
  auto text = ReadFile(path, kMaxTemplateBytes);
  if (!text) return Fail(text.error());
  auto program = energysaver::CompileTemplate(*text);
  if (!program) return Fail(path + ": " + program.error());
  return *program;
}

Result<std::shared_ptr<const TemplateSet>, std::string> TemplateSet::Load(
    const std::string& coap_template, const std::string& device_templates) {
  auto set = std::make_shared<TemplateSet>();
  if (!coap_template.empty()) {
    auto program = LoadTemplateFile(coap_template);
    if (!program) return Fail(program.error());
    set->global_ = *program;
  }
  if (device_templates.empty()) return std::shared_ptr<const TemplateSet>(std::move(set));

  // `iccid,template` with that header; the template column is a path. Small by nature (one
  // row per device with a template of its own), so a simple line reader does.
  auto text = ReadFile(device_templates, size_t{1} << 30);
  if (!text) return Fail(text.error());
  std::unordered_map<std::string, ProgramPtr> compiled;
  std::istringstream lines(*text);
  std::string line;
  size_t number = 0;
  bool header = true;
  while (std::getline(lines, line)) {
    ++number;
    const std::string_view row = Trim(line);
    if (row.empty()) continue;
    const auto where = [&] { return device_templates + ":" + std::to_string(number) + ": "; };
    const size_t comma = row.find(',');
    if (comma == std::string_view::npos || row.find(',', comma + 1) != std::string_view::npos) {
      return Fail(where() + "expected two fields: iccid,template");
    }
    const std::string iccid(Trim(row.substr(0, comma)));
    const std::string path(Trim(row.substr(comma + 1)));
    if (header) {
      if (iccid != "iccid" || path != "template") {
        return Fail(where() + "the header must be \"iccid,template\"");
      }
      header = false;
      continue;
    }
    if (iccid.empty() || path.empty()) return Fail(where() + "iccid and template are required");
    auto [it, inserted] = compiled.try_emplace(path);
    if (inserted) {
      auto program = LoadTemplateFile(path);
      if (!program) return Fail(where() + program.error());
      it->second = *program;
    }
    if (!set->by_iccid_.try_emplace(iccid, it->second).second) {
      return Fail(where() + "iccid " + iccid + " is listed twice");
    }
  }
  if (header) return Fail(device_templates + ": empty (the header \"iccid,template\" is missing)");
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
