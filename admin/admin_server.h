// AdminServer: the operator's HTTP listener ([admin] listen, loopback by default), served on
// threads of its own, never on a shard: GET /metrics (Prometheus text exposition), GET
// /healthz (alive: every shard makes progress) and GET /readyz (listening, registry loaded,
// sinks up, not draining; with the PostgreSQL backend its body also tells the database's
// state, which does not make the node unready: docs/cluster.md) for load-balancer health
// checks; GET /devices/{iccid} and
// GET /devices/by-address/{ip} for what one device did last.
//
// HTTP is cpp-httplib's (Debian libcpp-httplib-dev): a small, well-kept server whose
// thread-per-connection model suits a listener scraped every few seconds, and whose handlers
// are plain functions, so this room depends on no other room of coapgate. The handlers run on
// the listener's threads and must be safe to call from there at any time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "common/result.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace coapgate::admin {

// What a probe answers: ok → 200, else 503; `detail` is the one-line body.
struct Probe {
  bool ok;
  std::string detail;
};

// A JSON answer and its HTTP status.
struct JsonReply {
  int status;
  std::string body;
};

struct Handlers {
  std::function<std::string()> metrics;  ///< the whole exposition, text format 0.0.4
  std::function<Probe()> healthz;
  std::function<Probe()> readyz;
  // GET /devices/{iccid} and GET /devices/by-address/{ip} (the path segment as sent, not
  // decoded); null: the route answers 404.
  std::function<JsonReply(std::string_view iccid)> device_by_iccid;
  std::function<JsonReply(std::string_view ip)> device_by_address;
};

class AdminServer {
 public:
  // Binds host:port (port 0: any free port) and starts serving. The error names the address.
  [[nodiscard]] static Result<std::unique_ptr<AdminServer>, std::string> Start(
      const std::string& host, uint16_t port, Handlers handlers);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  [[nodiscard]] uint16_t port() const noexcept { return port_; }

 private:
  AdminServer() = default;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  uint16_t port_ = 0;
};

}  // namespace coapgate::admin
