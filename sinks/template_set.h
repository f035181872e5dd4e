// TemplateSet: the Energy Saver templates in force (docs/energy-saver.md): one global template for CoAP,
// and optional per-device templates (a coapgate extension) from a CSV `iccid,template` whose
// devices use their own template instead. Loaded at startup and on SIGHUP; immutable after.
//
// Thread contract: const after Load, so any thread may read it; swapped through a
// SnapshotHolder.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "energy_saver/template_program.h"
#include "common/error.h"
#include "common/result.h"

namespace coapgate::sinks {

class TemplateSet {
 public:
  using ProgramPtr = std::shared_ptr<const energysaver::Program>;

  // Either path may be empty (no global template / no per-device templates). Each template
  // file is compiled once however many devices name it. Errors are one line naming the file
  // (and, for the map, the line) and the template's own error, e.g.
  //   "t.json: sense[0].value.type: unknown type \"integer\" (...)".
  static Result<std::shared_ptr<const TemplateSet>, Error> Load(
      const std::string& coap_template, const std::string& device_templates);

  // The program a device's message is translated with; null when it is forwarded raw.
  // Never allocates (the publisher threads call it per message).
  [[nodiscard]] const ProgramPtr& For(std::string_view iccid) const noexcept;
  [[nodiscard]] bool empty() const noexcept { return global_ == nullptr && by_iccid_.empty(); }
  [[nodiscard]] size_t device_count() const noexcept { return by_iccid_.size(); }

 private:
  // Heterogeneous lookup: For() probes with the caller's string_view, so a message never
  // builds a std::string key (a 19- or 20-digit ICCID is past libstdc++'s 15-char
  // small-string buffer and would allocate).
  struct IccidHash {
    using is_transparent = void;
    [[nodiscard]] size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  ProgramPtr global_;
  std::unordered_map<std::string, ProgramPtr, IccidHash, std::equal_to<>> by_iccid_;
};

// Reads and compiles one template file; errors start with the path.
Result<TemplateSet::ProgramPtr, Error> LoadTemplateFile(const std::string& path);

}  // namespace coapgate::sinks
