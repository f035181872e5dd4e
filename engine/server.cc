#include "engine/server.h"

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "net/udp_socket.h"

namespace coapgate::engine {
namespace {

// Bootstrap requests waiting for the worker at once (each needs an fsync): a fleet rebooting
// after an outage asks within seconds; beyond this, devices get 5.03 and retry.
constexpr uint32_t kBootstrapQueueCapacity = 1024;

// CPUs this process may run on, in order: shards are pinned round-robin over them.
std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i) {
      if (CPU_ISSET(i, &set)) cpus.push_back(i);
    }
  }
  return cpus;
}

}  // namespace

void BlockServerSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a closed stdout must be a write error, not a kill
}

Result<std::shared_ptr<const registry::DeviceRegistry>, std::string> LoadDevices(const config::Config& config,
                                                                       bool* missing) {
  std::error_code ec;
  *missing = !std::filesystem::exists(config.devices.file, ec);
  if (*missing) {
    auto empty = registry::DeviceRegistry::ParseCsv("iccid,imsi,ip,status,psk,psk_format\n",
                                          config.devices.file);
    if (!empty) return Fail(empty.error());
    return *empty;
  }
  return registry::DeviceRegistry::LoadCsvFile(config.devices.file);
}

Result<std::shared_ptr<const sinks::TemplateSet>, std::string> LoadTemplates(
    const config::Config& config) {
  return sinks::TemplateSet::Load(config.energy_saver.coap_template,
                                  config.energy_saver.device_templates);
}

Server::Server(const config::Config& config) : config_(config) {}

Server::~Server() {
  for (auto& shard : shards_) shard->RequestStop();
  for (auto& shard : shards_) shard->Join();
  if (bootstrap_) bootstrap_->Stop();
  if (publishers_) publishers_->Stop(config_.server.drain_timeout_ms);
}

Result<std::unique_ptr<Server>, std::string> Server::Create(const config::Config& config) {
  auto server = std::unique_ptr<Server>(new Server(config));
  bool missing = false;
  auto devices = LoadDevices(config, &missing);
  if (!devices) return Fail(devices.error());
  if (missing) {
    spdlog::warn("{}: no such file: every device gets 4.01 until it exists and SIGHUP is sent",
                 config.devices.file);
  } else {
    spdlog::info("{}: {} devices", config.devices.file, (*devices)->size());
  }
  server->registry_ = std::make_unique<registry::RegistryHolder>(*devices);

  auto templates = LoadTemplates(config);
  if (!templates) return Fail(templates.error());
  if (!(*templates)->empty()) {
    spdlog::info("energy saver: {}{} per-device templates",
                 config.energy_saver.coap_template.empty()
                     ? std::string()
                     : "template " + config.energy_saver.coap_template + ", ",
                 (*templates)->device_count());
  }
  server->templates_ =
      std::make_unique<SnapshotHolder<sinks::TemplateSet>>(std::move(*templates));

  auto store = registry::PskStore::Open(config.devices.state, config.bootstrap.regenerate_after_s);
  if (!store) return Fail(store.error());
  server->psk_store_ = std::move(*store);
  server->bootstrap_ = std::make_unique<bootstrap::BootstrapService>(server->psk_store_.get(),
                                                          config.bootstrap.coaps_url,
                                                          kBootstrapQueueCapacity);

  auto publishers = sinks::PublisherPool::Create(config.sinks);
  if (!publishers) return Fail(publishers.error());
  server->publishers_ = std::move(*publishers);

  const std::vector<int> cpus = AllowedCpus();
  int shard_count = config.server.shards;
  if (shard_count == 0) shard_count = std::max<int>(1, static_cast<int>(cpus.size()));

  // Port 0 means "any free port": the first shard's socket picks it, the others share it.
  // Plain CoAP sockets first, then the coaps:// (DTLS) ones.
  std::vector<config::ListenAddress> listen = config.server.coap_listen;
  const size_t plain_count = listen.size();
  listen.insert(listen.end(), config.server.coaps_listen.begin(),
                config.server.coaps_listen.end());
  bool uring = config.server.io != config::IoBackend::kRecvmmsg;
  // The exchange memory per shard: SO_REUSEPORT steers devices by source address, so each shard
  // sees about its share of the registry; 25 % and 1024 records of headroom for the skew and
  // for devices added before the next restart.
  const uint32_t dedup_devices =
      config.coap.dedup_devices != 0
          ? config.coap.dedup_devices
          : static_cast<uint32_t>(std::min<uint64_t>(
                (*devices)->size() * 5 / 4 / static_cast<uint64_t>(shard_count) + 1024,
                ExchangeMemory::kMaxDevices));
  for (int i = 0; i < shard_count; ++i) {
    ShardOptions o;
    o.index = static_cast<uint32_t>(i);
    o.cpu = cpus.empty() ? -1 : cpus[static_cast<size_t>(i) % cpus.size()];
    for (config::ListenAddress& address : listen) {
      auto fd = net::OpenUdpSocket(address.host, address.port, config.server.receive_buffer_bytes);
      if (!fd) {
        for (int open_fd : o.sockets) close(open_fd);
        return Fail(fd.error());
      }
      if (address.port == 0) address.port = net::LocalPort(*fd);
      o.sockets.push_back(*fd);
      o.secure.push_back(o.secure.size() >= plain_count);
    }
    o.dtls.max_sessions = config.dtls.max_sessions;
    o.dtls.max_handshakes = config.dtls.max_handshakes;
    o.dtls.handshake_timeout_ms = config.dtls.handshake_timeout_ms;
    o.dtls.idle_timeout_s = config.dtls.idle_timeout_s;
    o.dtls.identity_hint = config.dtls.identity_hint;
    o.psk_store = server->psk_store_.get();
    o.io_factory = uring ? net::DatagramIoFactory(net::MakeUringIo)
                         : net::DatagramIoFactory(net::MakeRecvmmsgIo);
    o.max_payload = config.coap.max_payload;
    o.dedup_devices = dedup_devices;
    o.dedup_per_device = config.coap.dedup_per_device;
    o.inflight_capacity = config.coap.inflight_capacity;
    o.exchange_lifetime_s = config.coap.exchange_lifetime_s;
    o.non_lifetime_s = config.coap.non_lifetime_s;
    o.response_budget_ms = config.coap.response_budget_ms;
    o.busy_max_age_s = config.coap.busy_max_age_s;
    o.ack_on_enqueue = config.coap.ack == config::AckMode::kEnqueue;
    o.registry = server->registry_.get();
    o.publisher_wake_fds = server->publishers_->wake_fds();
    o.sinks_available = server->publishers_->available_flags();
    o.bootstrap = server->bootstrap_.get();
    const std::vector<int> sockets = o.sockets;
    auto shard = Shard::Create(o);
    if (!shard && uring && config.server.io == config::IoBackend::kAuto && i == 0 &&
        !shard.error().starts_with("dtls:")) {
      spdlog::warn("io_uring unavailable ({}); using recvmmsg", shard.error());
      uring = false;
      o.io_factory = net::MakeRecvmmsgIo;
      shard = Shard::Create(o);
    }
    if (!shard) {
      for (int fd : sockets) close(fd);
      return Fail("shard " + std::to_string(i) + ": " + shard.error());
    }
    server->shards_.push_back(std::move(*shard));
  }

  std::vector<sinks::Handoff*> handoffs;
  for (auto& shard : server->shards_) handoffs.push_back(&shard->handoff());
  server->publishers_->Start(handoffs, server->templates_.get(),
                             config.energy_saver.on_error == config::TranslationErrorPolicy::kReject);
  server->bootstrap_->Start();
  for (auto& shard : server->shards_) shard->Start();
  for (size_t i = 0; i < listen.size(); ++i) {
    const config::ListenAddress& address = listen[i];
    const bool v6 = address.host.find(':') != std::string::npos;
    spdlog::info("listening {}://{}{}{}:{} (shards={}, io={}, sinks: {})",
                 i < plain_count ? "coap" : "coaps", v6 ? "[" : "", address.host, v6 ? "]" : "",
                 address.port, shard_count, server->shards_.front()->io_name(),
                 server->publishers_->Describe());
  }
  const size_t dedup_bytes = server->shards_.front()->exchange_memory_bytes();
  spdlog::info("exchange memory: {} devices x {} exchanges per shard, {:.1f} MiB per shard "
               "({} bytes per device), allocated",
               dedup_devices, config.coap.dedup_per_device,
               static_cast<double>(dedup_bytes) / (1 << 20), dedup_bytes / dedup_devices);
  if (config.coap.dedup_capacity != 0) {
    spdlog::warn("coap.dedup_capacity is obsolete and ignored: the exchange memory is sized by "
                 "coap.dedup_devices and coap.dedup_per_device");
  }
  return server;
}

int Server::Run() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set, s);
  while (true) {
    const timespec timeout{1, 0};
    const int signal_number = sigtimedwait(&set, nullptr, &timeout);
    if (signal_number == SIGHUP) {
      Reload();
    } else if (signal_number == SIGUSR1) {
      LogCounters("counters");
    } else if (signal_number == SIGTERM || signal_number == SIGINT) {
      spdlog::info("{}: draining", strsignal(signal_number));
      Drain();
      LogCounters("final counters");
      return clean_ ? 0 : 1;
    }
  }
}

void Server::Reload() {
  // Templates and devices reload independently: a bad template keeps the old templates
  // without holding back a good devices file, and the reverse.
  auto templates = LoadTemplates(config_);
  if (!templates) {
    spdlog::error("reload failed, keeping the previous templates: {}", templates.error());
  } else {
    templates_->Replace(std::move(*templates));
    if (!config_.energy_saver.coap_template.empty() ||
        !config_.energy_saver.device_templates.empty()) {
      spdlog::info("reloaded the energy saver templates");
    }
  }
  bool missing = false;
  auto devices = LoadDevices(config_, &missing);
  if (!devices) {
    spdlog::error("reload failed, keeping the previous devices: {}", devices.error());
    return;
  }
  if (missing) {
    spdlog::error("reload failed, keeping the previous devices: {}: no such file",
                  config_.devices.file);
    return;
  }
  const size_t count = (*devices)->size();
  registry_->Replace(std::move(*devices));
  spdlog::info("reloaded {}: {} devices", config_.devices.file, count);
}

void Server::Drain() {
  for (auto& shard : shards_) shard->RequestDrain();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.server.drain_timeout_ms);
  // Done when every shard has run a whole turn knowing it drains (so nothing it accepted
  // before is missing from pending()) and nothing is pending any more.
  while (std::chrono::steady_clock::now() < deadline) {
    bool done = true;
    for (const auto& shard : shards_) done = done && shard->drain_seen() && shard->pending() == 0;
    if (done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  uint32_t left = 0;
  for (const auto& shard : shards_) left += shard->pending();
  if (left > 0) spdlog::warn("drain timeout: {} messages still pending", left);
  for (auto& shard : shards_) shard->RequestStop();
  for (auto& shard : shards_) shard->Join();
  bootstrap_->Stop();  // answers what is queued; the shards' sockets are still open
  // One deadline for the whole drain: what the shards used is not granted again.
  const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (!publishers_->Stop(static_cast<uint32_t>(std::max<int64_t>(remaining.count(), 0)))) {
    spdlog::error("sinks did not settle everything within {} ms: the rest was abandoned",
                  config_.server.drain_timeout_ms);
    clean_ = false;
  }
}

std::string Server::SummarizeDtls() const {
  std::string out;
  auto add = [&](const char* name, auto field) {
    uint64_t total = 0;
    for (const auto& shard : shards_) {
      total += (shard->dtls_counters()->*field).load(std::memory_order_relaxed);
    }
    if (total == 0) return;
    if (!out.empty()) out += ' ';
    out += std::string(name) + "=" + std::to_string(total);
  };
  using C = dtls::EndpointCounters;
  add("hello_verify_sent", &C::hello_verify_sent);
  add("bad_cookie", &C::bad_cookie);
  add("client_hello_dropped", &C::client_hello_dropped);
  add("handshakes_started", &C::handshakes_started);
  add("handshakes_completed", &C::handshakes_completed);
  add("sessions_replaced", &C::sessions_replaced);
  add("unknown_identity", &C::handshake_failed_unknown_identity);
  add("handshake_failed", &C::handshake_failed_other);
  add("handshake_timeouts", &C::handshake_timeouts);
  add("handshakes_refused", &C::handshakes_refused);
  add("table_full_refused", &C::table_full_refused);
  add("evicted_idle", &C::evicted_idle);
  add("evicted_for_space", &C::evicted_for_space);
  add("records_delivered", &C::records_delivered);
  add("records_sent", &C::records_sent);
  add("records_dropped", &C::records_dropped);
  add("close_notify", &C::close_notify);
  add("handshakes_superseded", &C::handshakes_superseded);
  add("retransmissions", &C::retransmissions);
  add("renegotiation_refused", &C::renegotiation_refused);
  add("sessions_failed", &C::sessions_failed);
  add("send_failed", &C::send_failed);
  size_t sessions = 0;
  for (const auto& shard : shards_) sessions += shard->dtls_sessions();
  if (!out.empty()) out += ' ';
  return out + "sessions=" + std::to_string(sessions);
}

void Server::LogCounters(const char* when) const {
  std::vector<const ShardCounters*> counters;
  for (const auto& shard : shards_) counters.push_back(&shard->counters());
  spdlog::info("{}: {}", when, SummarizeCounters(counters));
  spdlog::info("{} (sinks): {}", when, publishers_->Summary());
  if (shards_.front()->dtls_counters() != nullptr) {
    spdlog::info("{} (dtls): {}", when, SummarizeDtls());
  }
  spdlog::info("{} (bootstrap): replied_2.05={} replied_5.00={} queue_full={} send_failed={}",
               when, bootstrap_->replied_205(), bootstrap_->replied_500(),
               bootstrap_->queue_full(), bootstrap_->send_failures());
}

}  // namespace coapgate::engine
