#include "engine/server.h"

#include <sched.h>
#include <signal.h>
#include <poll.h>
#include <sys/random.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <unordered_map>
#include <fcntl.h>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/atomic_file.h"
#include "common/check.h"
#include "common/clock.h"
#include "engine/device_inspection.h"
#include "engine/instance_lock.h"
#include "engine/state_file.h"
#include "net/reuseport_steering.h"
#include "net/udp_socket.h"
#include "registry/csv_device_source.h"
#include "registry/postgres_change_follower.h"
#include "registry/postgres_device_source.h"
#include "registry/postgres_key_store.h"
#include "registry/psk_store.h"

extern char** environ;

namespace coapgate::engine {
namespace {

// Bootstrap requests waiting for the worker at once (each needs an fsync): a fleet rebooting
// after an outage asks within seconds; beyond this, devices get 5.03 and retry.
constexpr uint32_t kBootstrapQueueCapacity = 1024;

// Steers each listen address's datagrams to a shard by source IP address alone, so that a
// device whose NAT rebinds its port stays on the shard that holds its state. Without it (or
// when attaching fails: logged, one line per address) the kernel hashes the 4-tuple. The seed
// is random so the spread cannot be aimed at one shard with chosen source addresses.
uint32_t SteeringSeed() {
  uint32_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof seed)) {
    seed = static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return seed;
}

void AttachSteering(const std::vector<config::ListenAddress>& listen,
                    const std::vector<int>& group_member, uint32_t shard_count, uint32_t seed) {
  if (shard_count < 2) return;
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

// Timeouts of a take-over (engine/takeover_channel.h). The successor waits for the sockets
// while the predecessor finishes its pending messages (at most the response budget plus the
// slack); the predecessor then waits for "ready" while the successor builds its shards.
constexpr int kTakeoverRequestTimeoutMs = 5000;
constexpr uint64_t kTakeoverQuietSlackMs = 2000;
constexpr int kTakeoverAnswerTimeoutMs = 90000;
constexpr int kTakeoverReadyTimeoutMs = 60000;
constexpr int kTakeoverExportTimeoutMs = 5000;  ///< per shard: it answers within a turn
constexpr int kTakeoverWaitSliceMs = 250;   ///< the predecessor's waits: watchdog, stop requests
constexpr int kTakeoverGoTimeoutMs = 30000;  ///< the successor's wait for "go" after "ready"
constexpr int kTakeoverServingTimeoutMs = 10000;  ///< the predecessor's, for "serving"
// `coapgate upgrade`: how long the started successor may take to load and connect.
constexpr uint64_t kUpgradeTimeoutMs = 120000;

// `bytes` (then wiped) in an anonymous memory file for the successor; its descriptor.
Result<int, std::string> StateInMemory(std::string bytes) {
  const int fd = static_cast<int>(memfd_create("coapgate-takeover-state", MFD_CLOEXEC));
  if (fd < 0) return Fail("memfd_create: " + std::string(std::strerror(errno)));
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      std::fill(bytes.begin(), bytes.end(), '\0');
      return Fail("writing the take-over state: " + std::string(std::strerror(e)));
    }
    written += static_cast<size_t>(n);
  }
  std::fill(bytes.begin(), bytes.end(), '\0');
  return fd;
}

// Closes a descriptor at the end of a scope (-1: none).
struct ScopedFd {
  int fd = -1;
  explicit ScopedFd(int owned = -1) : fd(owned) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd >= 0) ::close(fd);
  }
};

// The whole of `fd` from offset 0 (pread: the offset of a passed memfd does not matter),
// in one buffer reserved to the file's size, so that a growing string leaves no unwiped
// copy of what it holds (restart states hold keys). 0, or the errno of the failed read.
int ReadWhole(int fd, std::string* out) {
  struct stat st;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out->reserve(static_cast<size_t>(st.st_size));
  char buffer[65536];
  int error = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(out->size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n <= 0) break;
    out->append(buffer, static_cast<size_t>(n));
  }
  std::fill(std::begin(buffer), std::end(buffer), '\0');
  return error;
}

// What a successor asks for and what a predecessor compares it with: the configured listen
// addresses and the shard count in use.
TakeoverRequest RequestFor(const config::Config& config, uint32_t shards) {
  TakeoverRequest request;
  request.shards = shards;
  for (const auto& a : config.server.coap_listen) request.coap_listen.push_back(a.text);
  for (const auto& a : config.server.coaps_listen) request.coaps_listen.push_back(a.text);
  return request;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const std::string& item : items) out += (out.size() > 1 ? ", " : "") + item;
  return out + "]";
}

}  // namespace

std::string TakeoverSocketPath(const config::Config& config) {
  // Named after the state file, which is one instance's alone with the CSV backend (opened
  // exclusively); with PostgreSQL, two instances on one host need distinct devices.state or
  // server.takeover_socket (Listen refuses a path a live process holds).
  if (!config.server.takeover_socket.empty()) return config.server.takeover_socket;
  return config.devices.state + ".takeover";
}

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
  if (first_registration_) first_registration_->Stop();
  if (publishers_) publishers_->Stop(config_.server.drain_timeout_ms);
}

Result<std::unique_ptr<Server>, Error> Server::Create(const config::Config& config,
                                                     bool take_over) {
  auto server = std::unique_ptr<Server>(new Server(config));
  // Read now: after a package upgrade the link names the old, deleted file, and an upgrade
  // must start the new one at this path.
  std::error_code ignored;
  server->self_exe_ = std::filesystem::read_symlink("/proc/self/exe", ignored).string();
  // Before anything else is opened: a second coapgate stops here, not after it joined the
  // first one's reuseport groups. A successor gets the locks with the sockets instead.
  if (!take_over) {
    std::vector<uint16_t> ports;
    for (const auto* addresses : {&config.server.coap_listen, &config.server.coaps_listen}) {
      for (const config::ListenAddress& address : *addresses) ports.push_back(address.port);
    }
    auto lock = InstanceLock::Acquire(ports);
    if (!lock) return FailEnvironment(std::move(lock).error());
    server->instance_lock_ = std::move(*lock);
  }
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

  if (config.devices.backend == config::DeviceBackend::kPostgres) {
    FirstRegistration::Options first;
    first.dsn = config.devices.postgres.dsn;
    first.shards = static_cast<uint32_t>(shard_count);
    first.registry = server->registry_.get();
    first.publisher_wake_fds = server->publishers_->wake_fds();
    server->first_registration_ = std::make_unique<FirstRegistration>(std::move(first));
  }

  // Port 0 means "any free port": the first shard's socket picks it, the others share it.
  // Plain CoAP sockets first, then the coaps:// (DTLS) ones.
  std::vector<config::ListenAddress> listen = config.server.coap_listen;
  const size_t plain_count = listen.size();
  listen.insert(listen.end(), config.server.coaps_listen.begin(),
                config.server.coaps_listen.end());
  // A take-over: the predecessor stops reading, then hands over its sockets (shard by shard,
  // in listen order) and its instance locks. Everything above was built while it still
  // served; what follows runs while the kernel queues the devices' datagrams.
  std::vector<int> inherited;
  ScopedFd inherited_state;  // the predecessor's restart state (a memfd)
  struct CloseUnused {  // the inherited sockets no shard took, on a failed start
    std::vector<int>* fds;
    size_t used = 0;
    ~CloseUnused() {
      for (size_t k = used; k < fds->size(); ++k) ::close((*fds)[k]);
    }
  } close_unused{&inherited};
  if (take_over) {
    auto channel = TakeoverChannel::Connect(TakeoverSocketPath(config));
    if (!channel) {
      return FailEnvironment(InConfig(config, "server.takeover_socket", channel.error()));
    }
    const std::string from = "take-over from pid " + std::to_string((*channel)->peer_pid());
    const TakeoverRequest request = RequestFor(config, static_cast<uint32_t>(shard_count));
    spdlog::info("{}: asking for its sockets", from);
    if (auto sent = (*channel)->Send(request.Encode()); !sent) {
      return FailEnvironment(from + ": " + sent.error());
    }
    auto answer = (*channel)->Receive(kTakeoverAnswerTimeoutMs);
    if (!answer) return FailEnvironment(from + ": " + answer.error());
    inherited = std::move(answer->fds);
    auto sockets = TakeoverSockets::Parse(answer->text);
    if (!sockets) return FailEnvironment(from + ": " + sockets.error());
    const size_t expected = static_cast<size_t>(shard_count) * listen.size();
    if (sockets->sockets != expected || sockets->state > 1 ||
        inherited.size() != expected + sockets->locks + sockets->state ||
        sockets->ports.size() != listen.size()) {
      return FailEnvironment(from + ": got " + std::to_string(inherited.size()) +
                             " descriptors for " + std::to_string(expected) + " sockets");
    }
    for (size_t j = 0; j < listen.size(); ++j) listen[j].port = sockets->ports[j];
    if (sockets->state == 1) {
      inherited_state.fd = inherited.back();
      inherited.pop_back();
    }
    server->instance_lock_ = InstanceLock::Adopt(std::vector<int>(
        inherited.begin() + static_cast<std::ptrdiff_t>(expected), inherited.end()));
    inherited.resize(expected);
    server->predecessor_ = std::move(*channel);
  }

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
      if (take_over) {
        const int fd = inherited[close_unused.used++];
        if (i == 0) group_member[o.sockets.size()] = fd;
        o.sockets.push_back(fd);
        o.secure.push_back(o.secure.size() >= plain_count);
        continue;
      }
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
    o.receive = !take_over;  // a successor reads once its predecessor said "go" (Run)
    o.first_registration = server->first_registration_.get();
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

  server->steering_seed_ = SteeringSeed();
  AttachSteering(listen, group_member, static_cast<uint32_t>(shard_count), server->steering_seed_);
  // Before the shards serve: each restored session and exchange goes to the shard that the
  // steering will send its device's datagrams to. A predecessor's state, when there is one,
  // is newer than any file.
  if (inherited_state.fd >= 0) {
    server->RestoreFromPredecessor(inherited_state.fd);
  } else {
    server->LoadRestartState();
  }

  std::vector<sinks::Handoff*> handoffs;
  for (auto& shard : server->shards_) handoffs.push_back(&shard->handoff());
  if (server->first_registration_) handoffs.push_back(&server->first_registration_->handoff());
  server->publishers_->Start(handoffs, server->templates_.get(),
                             config.energy_saver.on_error == config::TranslationErrorPolicy::kReject);
  if (server->first_registration_) server->first_registration_->Start();
  server->bootstrap_->Start();
  for (auto& shard : server->shards_) shard->Start();
  // A successor binds the admin port once the predecessor has let it go (Run).
  if (!take_over) {
    if (auto admin = server->StartAdmin(); !admin) return FailEnvironment(std::move(admin).error());
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

Result<void, std::string> Server::StartAdmin() {
  if (!config_.admin.enabled) return {};
  Server* raw = this;
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
  auto admin = admin::AdminServer::Start(config_.admin.listen.host, config_.admin.listen.port,
                                         std::move(handlers));
  if (!admin) return Fail(std::move(admin).error());
  admin_ = std::move(*admin);
  const bool v6 = config_.admin.listen.host.find(':') != std::string::npos;
  spdlog::info("admin listening http://{}{}{}:{} (/metrics /healthz /readyz /devices)",
               v6 ? "[" : "",
               config_.admin.listen.host, v6 ? "]" : "", admin_->port());
  return {};
}

int Server::Run() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  // The signals (blocked in every thread) and a successor's connection, in one poll.
  const int signals = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  CHECK(signals >= 0, "signalfd on a valid set");
  const ScopedFd close_signals{signals};
  serving_.store(true, std::memory_order_release);
  if (follower_) follower_->Start();
  if (predecessor_) {
    // Built and restored, reading nothing: only the predecessor's "go" lets this process
    // read, so that the two never both read the sockets.
    const std::string from = "take-over from pid " + std::to_string(predecessor_->peer_pid());
    Result<TakeoverMessage, std::string> go = Fail(std::string());
    if (StopPending()) {
      (void)predecessor_->Send("abort");
      go = Fail(std::string("told to stop before it served"));
    } else if (auto told = predecessor_->Send("ready " + std::to_string(getpid())); !told) {
      go = Fail(std::move(told.error()));
    } else {
      go = predecessor_->Receive(kTakeoverGoTimeoutMs);
    }
    if (!go || go->text != "go") {
      spdlog::error("{}: {}; exiting without having read the sockets",
                    from, go ? "the predecessor answered \"" + go->text.substr(0, 40) + "\""
                             : go.error());
      return 1;
    }
    // Under systemd this process becomes the service's main process before the predecessor
    // exits (it waits for "serving").
    notifier_.MainPid();
    for (auto& shard : shards_) shard->RequestReceiving(true);
    if (auto admin = StartAdmin(); !admin) spdlog::error("{}: admin: {}", from, admin.error());
    (void)predecessor_->Send("serving");
    spdlog::info("{}: serving on its sockets", from);
    predecessor_.reset();
  }
  ListenForSuccessor();
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
    pollfd polls[2] = {{signals, POLLIN, 0},
                       {takeover_listener_ ? takeover_listener_->fd() : -1, POLLIN, 0}};
    (void)ppoll(polls, 2, &timeout, nullptr);
    int signal_number = -1;
    signalfd_siginfo info;
    if (read(signals, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      signal_number = static_cast<int>(info.ssi_signo);
    }
    // A stop request goes first: a successor that connected meanwhile finds the socket gone.
    const bool stop = signal_number == SIGTERM || signal_number == SIGINT || StopPending();
    if (!stop && (polls[1].revents & POLLIN) != 0 && ServeTakeoverConnection()) {
      // The successor is the service's main process now (MAINPID=): no STOPPING=1 from here.
      draining_.store(true, std::memory_order_release);
      Drain();
      LogCounters("final counters");
      // Exit only once the service manager knows the successor as the main process.
      if (auto serving = successor_->Receive(kTakeoverServingTimeoutMs);
          !serving || serving->text != "serving") {
        // It may never have become the main process: exit 1, so that the service manager
        // restarts the node rather than leaving nobody on the sockets.
        spdlog::error("take-over by pid {}: no \"serving\" from it ({}); exiting 1",
                      successor_->peer_pid(),
                      serving ? serving->text.substr(0, 40) : serving.error());
        clean_ = false;
      }
      successor_.reset();
      return clean_ ? 0 : 1;
    }
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

void Server::ListenForSuccessor() {
  const std::string path = TakeoverSocketPath(config_);
  auto listener = TakeoverListener::Listen(path);
  if (!listener) {
    spdlog::warn("no take-over socket ({}): `coapgate --take-over` cannot replace this process",
                 listener.error());
    return;
  }
  takeover_listener_ = std::move(*listener);
  spdlog::info("take-over socket {} (coapgate --take-over)", path);
}

bool Server::ServeTakeoverConnection() {
  auto channel = takeover_listener_->Accept();
  if (!channel) {
    spdlog::warn("{}", channel.error());
    return false;
  }
  auto message = (*channel)->Receive(kTakeoverRequestTimeoutMs);
  if (!message) {
    spdlog::warn("take-over socket: pid {}: {}", (*channel)->peer_pid(), message.error());
    return false;
  }
  for (int fd : message->fds) ::close(fd);
  if (message->text == "upgrade") return Upgrade(std::move(*channel));
  return HandOver(std::move(*channel), message->text).has_value();
}

bool Server::Upgrade(std::unique_ptr<TakeoverChannel> requester) {
  const std::string by = "upgrade requested by pid " + std::to_string(requester->peer_pid());
  auto fail = [&](const std::string& why) {
    spdlog::error("{}: {}", by, why);
    (void)requester->Send("failed " + why);
    return false;
  };
  if (self_exe_.empty()) return fail("this process does not know its executable");
  // The successor is this process's child, so it runs inside the same service (cgroup); its
  // environment is ours but for WATCHDOG_PID, which names us and would keep it from pinging.
  std::vector<std::string> arguments{self_exe_, "--take-over"};
  if (!config_.source_path.empty()) {
    arguments.push_back("--config");
    arguments.push_back(config_.source_path);
  }
  std::vector<char*> argv;
  for (std::string& a : arguments) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).starts_with("WATCHDOG_PID=")) continue;
    envp.push_back(*e);
  }
  envp.push_back(nullptr);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  // Only stdin, stdout and stderr: libraries' descriptors without close-on-exec (accepted
  // admin connections, broker sockets) must not outlive this process in the child.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  pid_t child = 0;
  const int spawned = posix_spawn(&child, self_exe_.c_str(), &actions, &attributes, argv.data(),
                                  envp.data());
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return fail(self_exe_ + ": cannot start: " + std::strerror(spawned));
  spdlog::info("{}: started {} --take-over as pid {}", by, self_exe_, child);
  const int exited = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
  const ScopedFd close_pidfd{exited};
  // Reaps a successor that gave up (bounded: it exits right after a refusal).
  auto reap = [&](int timeout_ms) {
    pollfd p{exited, POLLIN, 0};
    if (exited >= 0) (void)poll(&p, 1, timeout_ms);
    int status = 0;
    return waitpid(child, &status, WNOHANG) == child ? status : -1;
  };
  const uint64_t deadline_ms = MonotonicMs() + kUpgradeTimeoutMs;
  while (true) {
    const uint64_t now_ms = MonotonicMs();
    if (now_ms >= deadline_ms || StopPending()) {
      // It has read nothing (it never got the sockets): killed, so that it cannot connect
      // later and take over after the requester was told the upgrade failed.
      ::kill(child, SIGKILL);
      int status = 0;
      (void)waitpid(child, &status, 0);
      return fail("pid " + std::to_string(child) +
                  (now_ms >= deadline_ms ? " did not connect within " +
                                               std::to_string(kUpgradeTimeoutMs / 1000) + " s"
                                         : std::string(" was still starting when told to stop")) +
                  "; killed it");
    }
    // In slices: the watchdog is fed while the successor loads (the shards serve on).
    notifier_.Watchdog();
    pollfd polls[2] = {{takeover_listener_->fd(), POLLIN, 0}, {exited, POLLIN, 0}};
    (void)poll(polls, 2, static_cast<int>(std::min<uint64_t>(deadline_ms - now_ms,
                                                             kTakeoverWaitSliceMs)));
    if ((polls[1].revents & POLLIN) != 0) {
      const int status = reap(0);
      return fail("pid " + std::to_string(child) + " exited (status " + std::to_string(status) +
                  ") before taking over; its log says why");
    }
    if ((polls[0].revents & POLLIN) == 0) continue;
    auto successor = takeover_listener_->Accept();
    if (!successor) continue;
    if ((*successor)->peer_pid() != child) {
      (void)(*successor)->Send("refused an upgrade is in progress");
      continue;
    }
    auto message = (*successor)->Receive(kTakeoverRequestTimeoutMs);
    if (!message) continue;
    for (int fd : message->fds) ::close(fd);
    auto handed = HandOver(std::move(*successor), message->text);
    if (!handed) {
      // Told "refused" or "abort", it exits by itself having read nothing; if not, killed.
      if (reap(5000) == -1) {
        ::kill(child, SIGKILL);
        int status = 0;
        (void)waitpid(child, &status, 0);
      }
      return fail(handed.error());
    }
    (void)requester->Send("upgraded " + std::to_string(child));
    return true;
  }
}

Result<void, std::string> Server::HandOver(std::unique_ptr<TakeoverChannel> successor,
                                           const std::string& text) {
  const std::string to = "take-over by pid " + std::to_string(successor->peer_pid());
  auto request = TakeoverRequest::Parse(text);
  const TakeoverRequest ours = RequestFor(config_, static_cast<uint32_t>(shards_.size()));
  std::string refusal;
  if (!request) {
    refusal = request.error();
  } else if (!(*request == ours)) {
    refusal = "this process serves " + std::to_string(ours.shards) + " shards on " +
              Join(ours.coap_listen) + " (coap) and " + Join(ours.coaps_listen) +
              " (coaps); the successor's configuration must have the same server.shards, "
              "coap_listen and coaps_listen";
  }
  if (!refusal.empty()) {
    spdlog::warn("{}: refused: {}", to, refusal);
    (void)successor->Send("refused " + refusal);
    return Fail("refused: " + refusal);
  }
  const uint64_t started_ms = MonotonicMs();
  spdlog::info("{}: stopping reading, finishing pending messages", to);
  for (auto& shard : shards_) shard->RequestReceiving(false);
  // Quiet: nothing more is read, everything read has been answered (2.04 or, at the budget,
  // 5.03), the bootstrap worker answered its queue. Bounded by the response budget.
  auto resume = [this](const std::string& why) {
    spdlog::error("{}; reading the sockets again", why);
    for (auto& shard : shards_) shard->RequestReceiving(true);
  };
  const uint64_t deadline_ms = started_ms + config_.coap.response_budget_ms + kTakeoverQuietSlackMs;
  uint64_t next_ping_ms = 0;
  while (true) {
    // The shards first: a bootstrap request is submitted in the turn that read it, before
    // that shard reports receive_stopped, so the worker's queue read after is complete.
    bool quiet = true;
    for (const auto& shard : shards_) {
      quiet = quiet && shard->receive_stopped() && shard->all_answered();
    }
    if (quiet && bootstrap_->idle()) break;
    // The shards turn while the control thread waits for them: fed, but not every 1 ms.
    if (MonotonicMs() >= next_ping_ms) {
      notifier_.Watchdog();
      next_ping_ms = MonotonicMs() + kTakeoverWaitSliceMs;
    }
    if (MonotonicMs() >= deadline_ms) {
      (void)successor->Send("refused the running process did not become quiet in time");
      resume(to + ": not quiet within the response budget");
      return Fail(std::string("not quiet within the response budget"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (auto released = psk_store_->Release(); !released) {
    (void)successor->Send("refused " + released.error());
    resume(to + ": " + released.error());
    return Fail(std::move(released.error()));
  }
  // The sessions and answered exchanges, taken by each shard on its own thread now that
  // nothing changes them, into memory that only the successor can reach.
  RestartStateWriter writer(ListenersFingerprint());
  for (auto& shard : shards_) {
    if (!shard->ExportOnShardThread(&writer, kTakeoverExportTimeoutMs)) {
      (void)successor->Send("refused a shard did not export its state");
      (void)psk_store_->Reacquire();
      resume(to + ": a shard did not export its state");
      return Fail(std::string("a shard did not export its state"));
    }
  }
  const uint32_t sessions = writer.sessions();
  const uint32_t exchanges = writer.exchanges();
  auto state = StateInMemory(writer.Finish());
  if (!state) {
    (void)successor->Send("refused " + state.error());
    (void)psk_store_->Reacquire();
    resume(to + ": " + state.error());
    return Fail(std::move(state.error()));
  }
  const ScopedFd close_state{*state};
  // The admin port is bound again by the successor; ours answers no more from here.
  admin_.reset();
  std::vector<int> fds;
  TakeoverSockets answer;
  for (const auto& shard : shards_) fds.insert(fds.end(), shard->sockets().begin(), shard->sockets().end());
  answer.sockets = static_cast<uint32_t>(fds.size());
  answer.locks = static_cast<uint32_t>(instance_lock_->fds().size());
  fds.insert(fds.end(), instance_lock_->fds().begin(), instance_lock_->fds().end());
  answer.state = 1;
  fds.push_back(*state);
  for (const int fd : shards_.front()->sockets()) answer.ports.push_back(net::LocalPort(fd));
  // Until "ready" the successor reads nothing (its shards wait for "go"); meanwhile the
  // watchdog is fed (the shards turn) and a stop request aborts the hand-over.
  Result<TakeoverMessage, std::string> ready = Fail(std::string());
  if (auto sent = successor->Send(answer.Encode(), fds); !sent) {
    ready = Fail(std::move(sent.error()));
  } else {
    const uint64_t ready_deadline_ms = MonotonicMs() + kTakeoverReadyTimeoutMs;
    while (true) {
      ready = successor->Receive(kTakeoverWaitSliceMs);
      if (ready || ready.error().find("no answer within") == std::string::npos) break;
      notifier_.Watchdog();
      if (StopPending()) {
        ready = Fail(std::string("told to stop"));
        break;
      }
      if (MonotonicMs() >= ready_deadline_ms) {
        ready = Fail("no \"ready\" within " + std::to_string(kTakeoverReadyTimeoutMs / 1000) + " s");
        break;
      }
    }
  }
  if (ready && ready->text.starts_with("ready ")) {
    for (int fd : ready->fds) ::close(fd);
    // Committed from here: the socket file goes before "go", so the successor's own listener
    // never races with ours.
    takeover_listener_.reset();
    if (auto sent = successor->Send("go"); !sent) {
      // It said ready and then vanished: nobody may read until a restart sorts it out, since
      // it might have read after all. The service manager restarts the node (exit 1 below).
      spdlog::error("{}: {} after \"ready\"", to, sent.error());
      clean_ = false;
    }
    spdlog::info("{}: handed over {} DTLS sessions and {} answered exchanges in {} ms; draining",
                 to, sessions, exchanges, MonotonicMs() - started_ms);
    successor_ = std::move(successor);
    return {};
  }
  if (ready) {
    for (int fd : ready->fds) ::close(fd);
    ready = Fail("unexpected answer \"" + ready->text.substr(0, 40) + "\"");
  }
  // Not committed: the successor read nothing (it waits for "go", and is told to give up),
  // so the sockets are ours alone again, with whatever queued meanwhile.
  (void)successor->Send("abort");
  if (auto reacquired = psk_store_->Reacquire(); !reacquired) {
    spdlog::error("{}: {}: bootstrap fails until restart", to, reacquired.error());
  }
  if (auto admin = StartAdmin(); !admin) spdlog::error("{}: admin: {}", to, admin.error());
  resume(to + ": " + ready.error());
  return Fail(std::move(ready.error()));
}

bool Server::StopPending() {
  sigset_t pending;
  sigemptyset(&pending);
  return sigpending(&pending) == 0 &&
         (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1);
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
  SaveRestartState();  // the shards are stopped: their state is the control thread's now
  bootstrap_->Stop();  // answers what is queued; the shards' sockets are still open
  if (first_registration_) first_registration_->Stop();  // a claim in flight rolls back
  // One deadline for the whole drain: what the shards used is not granted again.
  const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (!publishers_->Stop(static_cast<uint32_t>(std::max<int64_t>(remaining.count(), 0)))) {
    spdlog::error("sinks did not settle everything within {} ms: the rest was abandoned",
                  config_.server.drain_timeout_ms);
    clean_ = false;
  }
}

std::string Server::ListenersFingerprint() const {
  // The sessions' socket numbers index this list (every shard opens the plain addresses, then
  // the coaps:// ones, in this order).
  std::string out = "coap:";
  for (const config::ListenAddress& a : config_.server.coap_listen) out += " " + a.text;
  out += " coaps:";
  for (const config::ListenAddress& a : config_.server.coaps_listen) out += " " + a.text;
  return out;
}

uint32_t Server::ShardOfAddress(const sockaddr* address) const {
  return shards_.size() < 2
             ? 0
             : net::ShardForAddress(address, static_cast<uint32_t>(shards_.size()), steering_seed_);
}

void Server::LoadRestartState() {
  const config::Config::Restart& options = config_.restart;
  if (options.state_file.empty()) return;
  const std::string& path = options.state_file;
  const uint64_t started_us = MonotonicUs();
  auto refuse = [&](StateRefusal why, const std::string& detail) {
    restart_.refused[static_cast<size_t>(why)].fetch_add(1, std::memory_order_relaxed);
    // A file too old is of no use to anyone; any other is kept aside for the operator (it is
    // still encrypted) and out of the next start's way.
    const std::string aside = path + ".refused";
    const bool removed = why == StateRefusal::kTooOld ? ::unlink(path.c_str()) == 0
                                                      : ::rename(path.c_str(), aside.c_str()) == 0;
    spdlog::warn("restart state {} refused ({}): {}; starting without saved sessions{}", path,
                 ToString(why), detail,
                 !removed ? " (and it could not be moved: " + ErrnoText(errno) + ")"
                 : why == StateRefusal::kTooOld ? " (deleted)"
                                                : " (moved to " + aside + ")");
  };
  std::string sealed;
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) {
        spdlog::info("restart state {}: none saved; starting fresh", path);
      } else {
        refuse(StateRefusal::kUnreadable, "cannot open: " + ErrnoText(errno));
      }
      return;
    }
    const int error = ReadWhole(fd, &sealed);
    ::close(fd);
    if (error != 0) {
      refuse(StateRefusal::kUnreadable, "cannot read: " + ErrnoText(error));
      return;
    }
  }
  const auto key = ParseStateKey(options.key);
  CHECK(key.has_value(), "restart.key_file was checked with the configuration");
  auto opened = OpenState(*key, std::as_bytes(std::span(sealed)), WallMs(), options.max_age_s);
  if (!opened) {
    const StateRefusal why = opened.error();
    refuse(why, why == StateRefusal::kTooOld
                    ? "saved more than restart.max_age_s = " + std::to_string(options.max_age_s) +
                          " s ago (or dated in the future): its sessions may be gone on the "
                          "devices' side and its exchanges have expired"
                : why == StateRefusal::kBadKeyOrCorrupt
                    ? "it does not decrypt with the key of restart.key_file (another key, or "
                      "the file was damaged)"
                    : "not a restart state file this version can read");
    return;
  }
  auto restored = RestoreState(opened->plaintext);
  if (!restored) {
    refuse(restored.error(), restored.error() == StateRefusal::kListenersChanged
                                 ? "saved for other listen addresses (server.coap_listen, "
                                   "server.coaps_listen)"
                                 : "its contents are damaged although it decrypted");
    return;
  }
  if (::unlink(path.c_str()) != 0) {
    spdlog::error("restart state {}: restored, but cannot delete it: {}", path, ErrnoText(errno));
  }
  const uint64_t took_us = MonotonicUs() - started_us;
  restart_.load_us.store(took_us, std::memory_order_relaxed);
  spdlog::info("restart state {}: restored {} DTLS sessions ({} not) and {} answered exchanges "
               "({} not), saved {:.1f} s ago, in {:.1f} ms; file deleted",
               path, restored->sessions, restored->sessions_skipped, restored->exchanges,
               restored->exchanges_skipped, static_cast<double>(opened->age_ms) / 1000.0,
               static_cast<double>(took_us) / 1000.0);
}

void Server::RestoreFromPredecessor(int fd) {
  const uint64_t started_us = MonotonicUs();
  std::string plaintext;
  if (const int error = ReadWhole(fd, &plaintext); error != 0) {
    spdlog::warn("take-over: cannot read the predecessor's state: {}", ErrnoText(error));
  }
  auto restored = RestoreState(plaintext);
  if (!restored) {
    restart_.refused[static_cast<size_t>(restored.error())].fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("take-over: the predecessor's sessions and exchanges were refused ({}); "
                 "serving without them", ToString(restored.error()));
    return;
  }
  restart_.load_us.store(MonotonicUs() - started_us, std::memory_order_relaxed);
  spdlog::info("take-over: restored {} DTLS sessions ({} not) and {} answered exchanges ({} not) "
               "from the predecessor in {:.1f} ms",
               restored->sessions, restored->sessions_skipped, restored->exchanges,
               restored->exchanges_skipped,
               static_cast<double>(MonotonicUs() - started_us) / 1000.0);
}

Result<Server::Restored, StateRefusal> Server::RestoreState(std::string& plaintext) {
  // Exchanges of DTLS devices go to the shard of their device's session, so they are placed
  // after all sessions (the file lists them shard by shard).
  std::unordered_map<std::string, uint32_t> shard_of_identity;
  std::vector<ExchangeMemory::SavedExchange> exchanges;
  uint64_t sessions = 0;
  uint64_t sessions_skipped = 0;
  RestartStateVisitor visitor;
  visitor.session = [&](const dtls::ExportedSession& s) {
    const uint32_t shard = ShardOfAddress(reinterpret_cast<const sockaddr*>(&s.route.address));
    if (shard >= shards_.size()) {
      ++sessions_skipped;
      return;
    }
    if (auto imported = shards_[shard]->ImportSession(s); !imported) {
      ++sessions_skipped;
      spdlog::debug("restart state: session of {} not restored (reason {})", s.identity,
                    static_cast<int>(imported.error()));
      return;
    }
    ++sessions;
    const DeviceKey device = DeviceKeyForIdentity(s.identity);
    shard_of_identity.emplace(std::string(reinterpret_cast<const char*>(device.bytes.data()),
                                          device.bytes.size()),
                              shard);
  };
  visitor.exchange = [&](const ExchangeMemory::SavedExchange& e) { exchanges.push_back(e); };
  auto read = ReadRestartState(std::as_bytes(std::span(plaintext)), ListenersFingerprint(),
                               visitor);
  std::fill(plaintext.begin(), plaintext.end(), '\0');
  if (!read) return Fail(read.error());
  uint64_t restored = 0;
  for (const ExchangeMemory::SavedExchange& e : exchanges) {
    uint32_t shard = 0;
    if (e.device.kind == DeviceKey::kPlain) {
      sockaddr_in6 address{};
      address.sin6_family = AF_INET6;
      std::memcpy(&address.sin6_addr, e.device.bytes.data(), 16);
      shard = ShardOfAddress(reinterpret_cast<const sockaddr*>(&address));
    } else {
      const auto found = shard_of_identity.find(std::string(
          reinterpret_cast<const char*>(e.device.bytes.data()), e.device.bytes.size()));
      if (found == shard_of_identity.end()) continue;  // its session did not come back
      shard = found->second;
    }
    if (shard < shards_.size() && shards_[shard]->ImportExchange(e)) ++restored;
  }
  Restored done{sessions, sessions_skipped, restored, exchanges.size() - restored};
  restart_.sessions_restored.store(done.sessions, std::memory_order_relaxed);
  restart_.sessions_skipped.store(done.sessions_skipped, std::memory_order_relaxed);
  restart_.exchanges_restored.store(done.exchanges, std::memory_order_relaxed);
  restart_.exchanges_skipped.store(done.exchanges_skipped, std::memory_order_relaxed);
  return done;
}


void Server::SaveRestartState() {
  const config::Config::Restart& options = config_.restart;
  if (options.state_file.empty()) return;
  const uint64_t started_us = MonotonicUs();
  RestartStateWriter writer(ListenersFingerprint());
  for (const auto& shard : shards_) shard->ExportState(&writer);
  const uint32_t sessions = writer.sessions();
  const uint32_t exchanges = writer.exchanges();
  std::string plaintext = writer.Finish();
  const auto key = ParseStateKey(options.key);
  CHECK(key.has_value(), "restart.key_file was checked with the configuration");
  auto saved = SaveStateFile(options.state_file, *key, plaintext, WallMs());
  std::fill(plaintext.begin(), plaintext.end(), '\0');
  if (!saved) {
    restart_.save_failed.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("restart state not saved: {}; the next start has no sessions to restore",
                  saved.error().message);
    return;
  }
  spdlog::info("restart state {}: saved {} DTLS sessions and {} answered exchanges in {:.1f} ms",
               options.state_file, sessions, exchanges,
               static_cast<double>(MonotonicUs() - started_us) / 1000.0);
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
