#include "engine/server.h"

#include <sched.h>
#include <signal.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/check.h"
#include "common/clock.h"
#include "engine/device_inspection.h"
#include "engine/instance_lock.h"
#include "net/reuseport_steering.h"
#include "net/udp_socket.h"
#include "registry/csv_device_source.h"
#include "registry/postgres_change_follower.h"
#include "registry/postgres_device_source.h"
#include "registry/postgres_key_store.h"
#include "registry/psk_store.h"

namespace coapgate::engine {
namespace {

// Bootstrap requests waiting for the worker at once (each needs an fsync): a fleet rebooting
// after an outage asks within seconds; beyond this, devices get 5.03 and retry.
constexpr uint32_t kBootstrapQueueCapacity = 1024;

// Steers each listen address's datagrams to a shard by source IP address alone, so that a
// device whose NAT rebinds its port stays on the shard that holds its state. Without it (or
// when attaching fails: logged, one line per address) the kernel hashes the 4-tuple. The seed
// is random so the spread cannot be aimed at one shard with chosen source addresses.
void AttachSteering(const std::vector<config::ListenAddress>& listen,
                    const std::vector<int>& group_member, uint32_t shard_count) {
  if (shard_count < 2) return;
  uint32_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof seed)) {
    seed = static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  for (size_t i = 0; i < listen.size(); ++i) {
    const config::ListenAddress& address = listen[i];
    const int family = address.host.find(':') != std::string::npos ? AF_INET6 : AF_INET;
    auto attached = net::AttachSourceSteering(group_member[i], shard_count, family, seed);
    if (attached) {
      spdlog::info("steering {}:{} by source address over {} shards", address.host, address.port,
                   shard_count);
    } else {
      spdlog::warn("steering {}:{} not attached ({}, errno {}: {}); the kernel spreads by "
                   "address and port instead",
                   address.host, address.port, net::ToString(attached.error().errc),
                   attached.error().error_number, std::strerror(attached.error().error_number));
    }
  }
}

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
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a closed stdout must be a write error, not a kill
}

std::unique_ptr<registry::DeviceSource> MakeDeviceSource(const config::Config& config) {
  switch (config.devices.backend) {
    case config::DeviceBackend::kCsv:
      break;
    case config::DeviceBackend::kPostgres:
      return std::make_unique<registry::PostgresDeviceSource>(config.devices.postgres.dsn,
                                                              config.devices.postgres.snapshot);
  }
  return std::make_unique<registry::CsvDeviceSource>(config.devices.file);
}

std::string InConfig(const config::Config& config, std::string_view key,
                     const std::string& message) {
  const std::string& file =
      config.source_path.empty() ? std::string("(embedded defaults)") : config.source_path;
  return file + ": " + (key.empty() ? std::string() : std::string(key) + ": ") + message;
}

std::string_view TemplateKey(const config::Config& config, const std::string& message) {
  const auto& saver = config.energy_saver;
  if (!saver.coap_template.empty() && message.starts_with(saver.coap_template + ":")) {
    return "energy_saver.coap_template";
  }
  return "energy_saver.device_templates";
}

std::string_view DeviceSourceKey(const config::Config& config) {
  return config.devices.backend == config::DeviceBackend::kCsv ? "devices.file"
                                                               : "devices.postgres";
}

Result<std::shared_ptr<const sinks::TemplateSet>, Error> LoadTemplates(
    const config::Config& config) {
  return sinks::TemplateSet::Load(config.energy_saver.coap_template,
                                  config.energy_saver.device_templates);
}

Server::Server(const config::Config& config) : config_(config) {}

Server::~Server() {
  admin_.reset();
  follower_.reset();
  for (auto& shard : shards_) shard->RequestStop();
  for (auto& shard : shards_) shard->Join();
  if (bootstrap_) bootstrap_->Stop();
  if (publishers_) publishers_->Stop(config_.server.drain_timeout_ms);
}

Result<std::unique_ptr<Server>, Error> Server::Create(const config::Config& config) {
  auto server = std::unique_ptr<Server>(new Server(config));
  // Before anything else is opened: a second coapgate stops here, not after it joined the
  // first one's reuseport groups.
  std::vector<uint16_t> ports;
  for (const auto* addresses : {&config.server.coap_listen, &config.server.coaps_listen}) {
    for (const config::ListenAddress& address : *addresses) ports.push_back(address.port);
  }
  auto lock = InstanceLock::Acquire(ports);
  if (!lock) return FailEnvironment(std::move(lock).error());
  server->instance_lock_ = std::move(*lock);
  server->device_source_ = MakeDeviceSource(config);
  const uint64_t load_started_us = MonotonicUs();
  auto devices = server->device_source_->Load();
  if (!devices) {
    return tl::unexpected<Error>(
        Error{devices.error().kind,
              InConfig(config, DeviceSourceKey(config), devices.error().message)});
  }
  server->registry_load_us_.store(MonotonicUs() - load_started_us, std::memory_order_relaxed);
  server->registry_loaded_ms_.store(WallMs(), std::memory_order_relaxed);
  server->devices_missing_.store(devices->missing, std::memory_order_relaxed);
  if (devices->missing) {
    spdlog::warn("{}: no such file: every device gets 4.01 until it exists and SIGHUP is sent",
                 server->device_source_->name());
  } else {
    spdlog::info("{}: {} devices", server->device_source_->name(), devices->devices->size());
  }
  server->registry_ = std::make_unique<registry::RegistryHolder>(std::move(devices->devices));
  if (auto* postgres = dynamic_cast<registry::PostgresDeviceSource*>(server->device_source_.get())) {
    // Changes committed in the database reach this node through a reload on the main thread,
    // the same path as SIGHUP's, so that reloads never race.
    server->follower_ = std::make_unique<registry::PostgresChangeFollower>(
        postgres->dsn(), [postgres] { return postgres->loaded_seq(); },
        [] { ::kill(::getpid(), SIGUSR2); });
  }

  auto templates = LoadTemplates(config);
  if (!templates) {
    const std::string& message = templates.error().message;
    return tl::unexpected<Error>(
        Error{templates.error().kind, InConfig(config, TemplateKey(config, message), message)});
  }
  if (!(*templates)->empty()) {
    spdlog::info("energy saver: {}{} per-device templates",
                 config.energy_saver.coap_template.empty()
                     ? std::string()
                     : "template " + config.energy_saver.coap_template + ", ",
                 (*templates)->device_count());
  }
  server->templates_ =
      std::make_unique<SnapshotHolder<sinks::TemplateSet>>(std::move(*templates));

  if (config.devices.backend == config::DeviceBackend::kPostgres) {
    // The bootstrap state lives in the shared database too, so every node hands a device the
    // same key (docs/bootstrap-and-dtls.md); devices.state is not used.
    auto store = registry::PostgresKeyStore::Open(config.devices.postgres.dsn,
                                                  config.bootstrap.regenerate_after_s);
    if (!store) {
      return FailEnvironment(InConfig(config, "devices.postgres", store.error().message));
    }
    spdlog::info("bootstrap state: {} ({} devices)", (*store)->name(), (*store)->size());
    server->postgres_keys_ = store->get();
    server->psk_store_ = std::move(*store);
  } else {
    auto store =
        registry::PskStore::Open(config.devices.state, config.bootstrap.regenerate_after_s);
    if (!store) return FailEnvironment(std::move(store).error());
    server->psk_store_ = std::move(*store);
  }
  server->bootstrap_ = std::make_unique<bootstrap::BootstrapService>(
      server->psk_store_.get(), config.bootstrap.coaps_url, kBootstrapQueueCapacity,
      bootstrap::BootstrapLimits{config.coap.response_budget_ms, config.coap.busy_max_age_s});

  auto publishers = sinks::PublisherPool::Create(config.sinks);
  // PublisherPool's errors are still text: those naming a sink ("sinks[i]...") are settings.
  if (!publishers) {
    const bool settings = publishers.error().starts_with("sinks[");
    return tl::unexpected<Error>(
        Error{settings ? ErrorKind::kBadInput : ErrorKind::kEnvironment,
              settings ? InConfig(config, "", publishers.error()) : publishers.error()});
  }
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
                server->registry_->current()->size() * 5 / 4 /
                        static_cast<uint64_t>(shard_count) +
                    1024,
                ExchangeMemory::kMaxDevices));
  // One member of each listen address's reuseport group, to attach the steering through once
  // every shard's socket is bound (shard i binds the i-th socket of each group).
  std::vector<int> group_member(listen.size(), -1);
  for (int i = 0; i < shard_count; ++i) {
    ShardOptions o;
    o.index = static_cast<uint32_t>(i);
    o.cpu = cpus.empty() ? -1 : cpus[static_cast<size_t>(i) % cpus.size()];
    for (config::ListenAddress& address : listen) {
      auto fd = net::OpenUdpSocket(address.host, address.port, config.server.receive_buffer_bytes);
      if (!fd) {
        for (int open_fd : o.sockets) close(open_fd);
        return FailEnvironment(std::move(fd).error());
      }
      if (address.port == 0) {
        address.port = net::LocalPort(*fd);
        if (auto taken = server->instance_lock_->Take(address.port); !taken) {
          close(*fd);
          for (int open_fd : o.sockets) close(open_fd);
          return FailEnvironment(std::move(taken).error());
        }
      }
      if (i == 0) group_member[o.sockets.size()] = *fd;
      o.sockets.push_back(*fd);
      o.secure.push_back(o.secure.size() >= plain_count);
    }
    o.dtls.max_sessions = config.dtls.max_sessions;
    o.dtls.max_handshakes = config.dtls.max_handshakes;
    o.dtls.max_handshakes_per_source = config.dtls.max_handshakes_per_source;
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
      return FailEnvironment("shard " + std::to_string(i) + ": " + shard.error());
    }
    server->shards_.push_back(std::move(*shard));
  }

  AttachSteering(listen, group_member, static_cast<uint32_t>(shard_count));

  std::vector<sinks::Handoff*> handoffs;
  for (auto& shard : server->shards_) handoffs.push_back(&shard->handoff());
  server->publishers_->Start(handoffs, server->templates_.get(),
                             config.energy_saver.on_error == config::TranslationErrorPolicy::kReject);
  server->bootstrap_->Start();
  for (auto& shard : server->shards_) shard->Start();
  if (config.admin.enabled) {
    Server* raw = server.get();
    admin::Handlers handlers;
    handlers.metrics = [raw] { return raw->MetricsText(); };
    handlers.healthz = [raw] { return raw->Healthz(); };
    handlers.readyz = [raw] { return raw->Readyz(); };
    // GET /devices: the current snapshot (held for the answer) and its activity words.
    handlers.device_by_iccid = [raw](std::string_view iccid) {
      return InspectDeviceByIccid(*raw->registry_->current(), raw->psk_store_.get(), iccid);
    };
    handlers.device_by_address = [raw](std::string_view ip) {
      return InspectDeviceByAddress(*raw->registry_->current(), raw->psk_store_.get(), ip);
    };
    auto admin = admin::AdminServer::Start(config.admin.listen.host, config.admin.listen.port,
                                           std::move(handlers));
    if (!admin) return FailEnvironment(std::move(admin).error());
    server->admin_ = std::move(*admin);
    const bool v6 = config.admin.listen.host.find(':') != std::string::npos;
    spdlog::info("admin listening http://{}{}{}:{} (/metrics /healthz /readyz /devices)",
                 v6 ? "[" : "",
                 config.admin.listen.host, v6 ? "]" : "", server->admin_->port());
  }
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
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  serving_.store(true, std::memory_order_release);
  if (follower_) follower_->Start();
  notifier_.Ready(StatusLine(0));
  // The watchdog is judged once per check interval: a quarter of WatchdogSec, so that one slow
  // turn of the control loop never misses a ping; at most 1 s, and at least 250 ms, longer
  // than an idle shard's longest wait (a shard that merely waits still turns in time).
  const uint64_t check_ms = notifier_.watchdog_usec() == 0
                                ? 1000
                                : std::clamp<uint64_t>(notifier_.watchdog_usec() / 4000, 250, 1000);
  uint64_t last_check_ms = MonotonicMs();
  uint64_t last_received = 0;
  bool stuck_reported = false;
  while (true) {
    const timespec timeout{static_cast<time_t>(check_ms / 1000),
                           static_cast<long>(check_ms % 1000) * 1000000};
    const int signal_number = sigtimedwait(&set, nullptr, &timeout);
    if (signal_number == SIGHUP) {
      notifier_.Reloading();
      Reload();
      notifier_.Ready(StatusLine(0));
    } else if (signal_number == SIGUSR2) {
      // The registry alone: raised by the PostgreSQL change follower, or by an operator.
      notifier_.Reloading();
      ReloadDevices();
      notifier_.Ready(StatusLine(0));
    } else if (signal_number == SIGUSR1) {
      LogCounters("counters");
    } else if (signal_number == SIGTERM || signal_number == SIGINT) {
      spdlog::info("{}: draining", strsignal(signal_number));
      notifier_.Stopping();
      draining_.store(true, std::memory_order_release);
      Drain();
      LogCounters("final counters");
      return clean_ ? 0 : 1;
    }
    const uint64_t now_ms = MonotonicMs();
    if (now_ms - last_check_ms < check_ms) continue;
    // Rates over the interval since the last check; the watchdog only while all shards turn.
    uint64_t received = 0;
    std::vector<uint64_t> turns;
    for (const auto& shard : shards_) {
      received += shard->counters().Get(Counter::kReceived);
      turns.push_back(shard->turns());
    }
    const double seconds = static_cast<double>(now_ms - last_check_ms) / 1000.0;
    notifier_.Status(StatusLine(static_cast<double>(received - last_received) / seconds));
    last_received = received;
    last_check_ms = now_ms;
    const bool moved = progress_.AllMoved(turns);
    healthy_.store(moved, std::memory_order_release);
    if (moved) {
      notifier_.Watchdog();
      stuck_reported = false;
    } else if (!stuck_reported) {
      spdlog::error("shard {} made no progress for {} ms: no watchdog ping (systemd restarts "
                    "a wedged node when WatchdogSec is set)", progress_.stuck(), check_ms);
      stuck_reported = true;
    }
  }
}

std::string Server::StatusLine(double datagrams_per_s) const {
  size_t sessions = 0;
  for (const auto& shard : shards_) sessions += shard->dtls_sessions();
  return std::to_string(static_cast<uint64_t>(datagrams_per_s)) + " datagrams/s, " +
         std::to_string(registry_->current()->size()) + " devices, " +
         std::to_string(sessions) + " DTLS sessions, " + std::to_string(shards_.size()) +
         " shards";
}

void Server::Reload() {
  // Log rotation: the file sinks write to their path's current file from now on.
  for (const std::string& error : publishers_->ReopenFiles()) {
    spdlog::error("reload: {}; writing on to the old file", error);
  }
  // Templates and devices reload independently: a bad template keeps the old templates
  // without holding back a good devices file, and the reverse.
  auto templates = LoadTemplates(config_);
  if (!templates) {
    spdlog::error("reload failed, keeping the previous templates: {}", templates.error().message);
  } else {
    templates_->Replace(std::move(*templates));
    if (!config_.energy_saver.coap_template.empty() ||
        !config_.energy_saver.device_templates.empty()) {
      spdlog::info("reloaded the energy saver templates");
    }
  }
  RereadReloadLimit();
  ReloadDevices();
}

void Server::RereadReloadLimit() {
  if (config_.source_path.empty()) return;
  auto reread = config::LoadConfigFile(config_.source_path);
  if (!reread) {
    spdlog::error("reload: {}; keeping devices.reload_max_removed_percent = {}",
                  reread.error().message, config_.devices.reload_max_removed_percent);
    return;
  }
  const uint32_t limit = reread->devices.reload_max_removed_percent;
  if (limit != config_.devices.reload_max_removed_percent) {
    spdlog::info("reload: devices.reload_max_removed_percent = {} (was {})", limit,
                 config_.devices.reload_max_removed_percent);
    config_.devices.reload_max_removed_percent = limit;
  }
}

void Server::ReloadDevices() {
  const uint64_t load_started_us = MonotonicUs();
  auto devices = device_source_->Load();
  const uint64_t load_us = MonotonicUs() - load_started_us;
  if (!devices) {
    spdlog::error("reload failed, keeping the previous devices: {}", devices.error().message);
    return;
  }
  if (devices->missing) {
    spdlog::error("reload failed, keeping the previous devices: {}: no such file",
                  device_source_->name());
    return;
  }
  const size_t count = devices->devices->size();
  // The snapshot in force, diffed by ICCID against the new one.
  const std::shared_ptr<const registry::DeviceRegistry> previous = registry_->current();
  size_t removed = 0;
  for (size_t i = 0; i < previous->size(); ++i) {
    if (!devices->devices->FindByIccid(previous->Get(i).iccid)) ++removed;
  }
  const uint32_t limit = config_.devices.reload_max_removed_percent;
  // The CSV only: a file can be caught half-written; the database's changes are transactions.
  if (config_.devices.backend == config::DeviceBackend::kCsv &&
      removed * 100 > uint64_t{limit} * previous->size()) {
    reloads_refused_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("reload refused, keeping the previous {} devices: {} would remove {} of them "
                  "(more than devices.reload_max_removed_percent = {}%); a truncated file? "
                  "Replace it atomically (write, then rename); to apply a deliberate removal, "
                  "raise the limit in the config file and reload again",
                  previous->size(), device_source_->name(), removed, limit);
    return;
  }
  // What the devices kept did last (GET /devices) survives the reload.
  devices->devices->InheritActivity(*previous);
  registry_->Replace(std::move(devices->devices));
  registry_load_us_.store(load_us, std::memory_order_relaxed);
  registry_loaded_ms_.store(WallMs(), std::memory_order_relaxed);
  devices_missing_.store(false, std::memory_order_release);
  reloads_.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("reloaded {}: {} devices", device_source_->name(), count);
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
  ForEachDtlsCounter([&](const char* name, uint64_t total) {
    if (total == 0) return;
    if (!out.empty()) out += ' ';
    out += std::string(name) + "=" + std::to_string(total);
  });
  size_t sessions = 0;
  for (const auto& shard : shards_) sessions += shard->dtls_sessions();
  if (!out.empty()) out += ' ';
  return out + "sessions=" + std::to_string(sessions);
}

void Server::ForEachDtlsCounter(
    const std::function<void(const char* name, uint64_t total)>& visit) const {
  auto add = [&](const char* name, auto field) {
    uint64_t total = 0;
    for (const auto& shard : shards_) {
      if (shard->dtls_counters() == nullptr) continue;
      total += (shard->dtls_counters()->*field).load(std::memory_order_relaxed);
    }
    visit(name, total);
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
  add("wrong_key", &C::handshake_failed_wrong_key);
  add("handshake_timeouts", &C::handshake_timeouts);
  add("handshakes_refused", &C::handshakes_refused);
  add("handshakes_refused_per_source", &C::handshakes_refused_per_source);
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
}

void Server::LogCounters(const char* when) const {
  std::vector<const ShardCounters*> counters;
  for (const auto& shard : shards_) counters.push_back(&shard->counters());
  spdlog::info("{}: {}", when, SummarizeCounters(counters));
  spdlog::info("{} (sinks): {}", when, publishers_->Summary());
  if (shards_.front()->dtls_counters() != nullptr) {
    spdlog::info("{} (dtls): {}", when, SummarizeDtls());
  }
  spdlog::info("{} (bootstrap): replied_2.05={} replied_5.00={} replied_5.03={} queue_full={} "
               "expired={} coalesced={} send_failed={}",
               when, bootstrap_->replied_205(), bootstrap_->replied_500(),
               bootstrap_->replied_503(), bootstrap_->queue_full(), bootstrap_->expired(),
               bootstrap_->coalesced(), bootstrap_->send_failures());
  std::string received;
  for (const auto& shard : shards_) {
    received += received.empty() ? "" : ",";
    received += std::to_string(shard->counters().Get(Counter::kReceived));
  }
  spdlog::info("{} (per shard): received={}", when, received);
}

}  // namespace coapgate::engine
