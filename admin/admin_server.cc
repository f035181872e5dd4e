#include "admin/admin_server.h"

#include <httplib.h>

namespace coapgate::admin {
namespace {

constexpr const char* kExpositionType = "text/plain; version=0.0.4; charset=utf-8";

void Answer(const Probe& probe, httplib::Response& res) {
  res.status = probe.ok ? 200 : 503;
  res.set_content(probe.detail + "\n", "text/plain; charset=utf-8");
}

}  // namespace

Result<std::unique_ptr<AdminServer>, std::string> AdminServer::Start(const std::string& host,
                                                                     uint16_t port,
                                                                     Handlers handlers) {
  std::unique_ptr<AdminServer> server(new AdminServer());
  server->http_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *server->http_;
  http.Get("/metrics", [metrics = handlers.metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), kExpositionType);
  });
  http.Get("/healthz", [probe = handlers.healthz](const httplib::Request&, httplib::Response& res) {
    Answer(probe(), res);
  });
  http.Get("/readyz", [probe = handlers.readyz](const httplib::Request&, httplib::Response& res) {
    Answer(probe(), res);
  });
  // Registered before /devices/{iccid}: the by-address path has one segment more, so the two
  // patterns never both match.
  if (handlers.device_by_address) {
    http.Get(R"(/devices/by-address/([^/]+))",
             [device = handlers.device_by_address](const httplib::Request& req,
                                                   httplib::Response& res) {
               const JsonReply reply = device(req.matches[1].str());
               res.status = reply.status;
               res.set_content(reply.body + "\n", "application/json");
             });
  }
  if (handlers.device_by_iccid) {
    http.Get(R"(/devices/([^/]+))", [device = handlers.device_by_iccid](
                                        const httplib::Request& req, httplib::Response& res) {
      const JsonReply reply = device(req.matches[1].str());
      res.status = reply.status;
      res.set_content(reply.body + "\n", "application/json");
    });
  }
  const std::string where = (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                            ":" + std::to_string(port);
  if (port == 0) {
    const int chosen = http.bind_to_any_port(host);
    if (chosen <= 0) return Fail("admin.listen " + where + ": cannot bind");
    server->port_ = static_cast<uint16_t>(chosen);
  } else {
    if (!http.bind_to_port(host, port)) {
      return Fail("admin.listen " + where + ": cannot bind (in use, or not a local address)");
    }
    server->port_ = port;
  }
  server->thread_ = std::thread([&http] { http.listen_after_bind(); });
  return server;
}

AdminServer::~AdminServer() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace coapgate::admin
