#include "engine/device_inspection.h"

#include <array>
#include <string>

#include "codec/code.h"
#include "common/json_escape.h"
#include "common/limits.h"
#include "common/rfc3339.h"

namespace coapgate::engine {
namespace {

void AppendString(std::string& out, std::string_view text) {
  out.push_back('"');
  const size_t at = out.size();
  out.resize(at + JsonEscapedLength(text));
  (void)JsonEscape(text, std::span<char>(out.data() + at, out.size() - at));
  out.push_back('"');
}

void AppendTime(std::string& out, uint64_t unix_s) {
  if (unix_s == 0) {
    out += "null";
    return;
  }
  std::array<char, kRfc3339Size> text;
  AppendString(out, std::string_view(text.data(), FormatRfc3339(unix_s * 1000, false, text)));
}

void AppendReason(std::string& out, registry::Reason reason) {
  if (reason == registry::Reason::kNone) {
    out += "null";
  } else {
    AppendString(out, registry::ReasonName(reason));
  }
}

admin::JsonReply Describe(const registry::DeviceRegistry& registry,
                          const registry::KeyStore* psk_store,
                          const registry::DeviceView& device) {
  const registry::RequestActivity request = registry.LoadRequestActivity(device.index);
  const registry::HandshakeActivity handshake = registry.LoadHandshakeActivity(device.index);
  std::string out = "{\"registered\":true,\"iccid\":";
  AppendString(out, device.iccid);
  out += ",\"imsi\":";
  if (device.imsi.empty()) {
    out += "null";
  } else {
    AppendString(out, device.imsi);
  }
  out += ",\"ip\":";
  if (device.ip) {
    AppendString(out, device.ip->ToString());
  } else {
    out += "null";
  }
  out += device.active ? ",\"status\":\"active\"" : ",\"status\":\"inactive\"";
  out += ",\"last_seen\":";
  AppendTime(out, request.last_seen_s);
  out += ",\"last_code\":";
  if (request.code == 0) {
    out += "null";
  } else {
    AppendString(out, codec::Dotted(request.code).view());
  }
  out += ",\"last_reason\":";
  AppendReason(out, request.reason);
  out += request.dtls ? ",\"dtls_session\":true" : ",\"dtls_session\":false";
  out += ",\"last_handshake_failure\":";
  if (handshake.failed_s == 0) {
    out += "null";
  } else {
    out += "{\"reason\":";
    AppendReason(out, handshake.reason);
    out += ",\"at\":";
    AppendTime(out, handshake.failed_s);
    out += "}";
  }
  // Where the DTLS key comes from; the key itself is never part of the answer.
  const std::optional<registry::KeyStore::BootstrapState> bootstrap =
      psk_store == nullptr ? std::nullopt : psk_store->StateOf(device.iccid);
  out += ",\"key_source\":";
  if (!device.psk.empty()) {
    out += "\"csv\"";
  } else if (bootstrap && bootstrap->generated_key) {
    out += "\"generated\"";
  } else {
    out += "\"none\"";
  }
  out += ",\"last_bootstrap\":";
  AppendTime(out, bootstrap ? bootstrap->last_call_s : 0);
  out += "}";
  return {200, std::move(out)};
}

admin::JsonReply NotRegistered() { return {404, "{\"registered\":false}"}; }

admin::JsonReply BadRequest(std::string_view why) {
  std::string out = "{\"error\":";
  AppendString(out, why);
  out += "}";
  return {400, std::move(out)};
}

}  // namespace

admin::JsonReply InspectDeviceByIccid(const registry::DeviceRegistry& registry,
                                      const registry::KeyStore* psk_store,
                                      std::string_view iccid) {
  // The registry's own rule for the iccid column (registry.md).
  bool digits = !iccid.empty();
  for (char c : iccid) digits = digits && c >= '0' && c <= '9';
  if (!digits || iccid.size() < kMinIccidLength || iccid.size() > kMaxIccidLength) {
    return BadRequest("iccid must be " + std::to_string(kMinIccidLength) + " to " +
                      std::to_string(kMaxIccidLength) + " digits");
  }
  const std::optional<registry::DeviceView> device = registry.FindByIccid(iccid);
  return device ? Describe(registry, psk_store, *device) : NotRegistered();
}

admin::JsonReply InspectDeviceByAddress(const registry::DeviceRegistry& registry,
                                        const registry::KeyStore* psk_store, std::string_view ip) {
  const std::optional<net::IpAddress> address = net::IpAddress::Parse(ip);
  if (!address) return BadRequest("not an IPv4 or IPv6 address");
  const std::optional<registry::DeviceView> device = registry.FindByIp(*address);
  return device ? Describe(registry, psk_store, *device) : NotRegistered();
}

}  // namespace coapgate::engine
