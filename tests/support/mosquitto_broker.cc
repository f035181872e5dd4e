#include "tests/support/mosquitto_broker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace coapgate::test {
namespace {

constexpr const char* kMosquitto = "/usr/sbin/mosquitto";
constexpr auto kStartTimeout = std::chrono::seconds(10);

// A port nobody listens on right now: bind port 0, read it, close. Racy by nature, which is
// acceptable for a test on loopback.
uint16_t FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

bool Accepts(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return ok;
}

// Runs the program at the path argv[0] with its output appended to `log`; true if it exited 0.
bool Run(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void Reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

MosquittoBroker::MosquittoBroker(MosquittoBrokerOptions options) : options_(std::move(options)) {
  if (!Prepare() && error_.empty()) error_ = "broker setup failed";
}

MosquittoBroker::~MosquittoBroker() {
  Kill9();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

bool MosquittoBroker::Prepare() {
  std::string pattern = (std::filesystem::temp_directory_path() / "mosquitto-test-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    error_ = "mkdtemp: " + std::string(std::strerror(errno));
    return false;
  }
  dir_ = pattern;
  conf_ = dir_ + "/mosquitto.conf";
  log_ = dir_ + "/mosquitto.log";
  port_ = FreePort();
  if (options_.tls) tls_port_ = FreePort();
  if (port_ == 0 || (options_.tls && (tls_port_ == 0 || tls_port_ == port_))) {
    error_ = "no free loopback port";
    return false;
  }
  std::ostringstream conf;
  // Messages for the subscriber must not be dropped by the broker's default queue limit
  // (1000 queued).
  conf << "persistence false\n"
       << "log_dest stderr\n"
       << "log_type all\n"
       << "log_timestamp true\n"
       << "max_inflight_messages " << options_.max_inflight_messages << "\n"
       << "max_queued_messages 100000\n"
       << "listener " << port_ << " 127.0.0.1\n";
  // Started as root, mosquitto would switch to the "mosquitto" user, who cannot read this
  // private temp dir; "root" keeps it as it is (the setting is ignored when not root).
  if (geteuid() == 0) conf << "user root\n";
  if (options_.username.empty()) {
    conf << "allow_anonymous true\n";
  } else {
    const std::string passwords = dir_ + "/passwords";
    if (!Run({"/usr/bin/mosquitto_passwd", "-b", "-c", passwords, options_.username, options_.password},
             log_)) {
      error_ = "mosquitto_passwd failed; see " + log_;
      return false;
    }
    conf << "allow_anonymous false\n"
         << "password_file " << passwords << "\n";
  }
  if (options_.tls) {
    if (!MakeCertificates()) return false;
    conf << "listener " << tls_port_ << " 127.0.0.1\n"
         << "cafile " << ca_file_ << "\n"
         << "certfile " << dir_ << "/server.crt\n"
         << "keyfile " << dir_ << "/server.key\n";
  }
  std::ofstream(conf_) << conf.str();
  return true;
}

bool MosquittoBroker::MakeCertificates() {
  const std::string d = dir_ + "/";
  ca_file_ = d + "ca.crt";
  std::ofstream(d + "server.ext") << "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n";
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                       "-nodes"};
  std::vector<std::string> ca = {"/usr/bin/openssl", "req", "-x509"};
  ca.insert(ca.end(), ec.begin(), ec.end());
  ca.insert(ca.end(), {"-keyout", d + "ca.key", "-out", ca_file_, "-days", "2", "-subj",
                       "/CN=coapgate test CA"});
  std::vector<std::string> request = {"/usr/bin/openssl", "req", "-new"};
  request.insert(request.end(), ec.begin(), ec.end());
  request.insert(request.end(), {"-keyout", d + "server.key", "-out", d + "server.csr",
                                 "-subj", "/CN=127.0.0.1"});
  const std::vector<std::string> sign = {
      "/usr/bin/openssl", "x509", "-req", "-in", d + "server.csr", "-CA", ca_file_, "-CAkey",
      d + "ca.key", "-CAcreateserial", "-out", d + "server.crt", "-days", "2", "-extfile",
      d + "server.ext"};
  if (!Run(ca, log_) || !Run(request, log_) || !Run(sign, log_)) {
    error_ = "openssl failed to make the test certificates; see " + log_;
    return false;
  }
  return true;
}

bool MosquittoBroker::Start() {
  if (!error_.empty()) return false;
  if (running()) return true;
  // Everything the child needs is prepared before fork: after it only async-signal-safe
  // calls are allowed in this multi-threaded process.
  const std::string log = log_;
  const std::string conf = conf_;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    error_ = "fork: " + std::string(std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphaned broker if the test binary dies
    if (getppid() != parent) _exit(1);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execl(kMosquitto, "mosquitto", "-c", conf.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = pid;
  if (!WaitListening(std::chrono::steady_clock::now() + kStartTimeout)) {
    Kill9();
    if (error_.empty()) error_ = "mosquitto did not start listening; log:\n" + Log();
    return false;
  }
  return true;
}

bool MosquittoBroker::WaitListening(std::chrono::steady_clock::time_point deadline) {
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "mosquitto exited at start (status " + std::to_string(status) + "); log:\n" + Log();
      return false;
    }
    if (Accepts(port_) && (tls_port_ == 0 || Accepts(tls_port_))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void MosquittoBroker::Kill9() {
  if (!running()) return;
  kill(pid_, SIGKILL);
  Reap(pid_);
  pid_ = -1;
}

void MosquittoBroker::Stop() {
  if (!running()) return;
  kill(pid_, SIGCONT);
  kill(pid_, SIGTERM);
  Reap(pid_);
  pid_ = -1;
}

void MosquittoBroker::Pause() {
  if (running()) kill(pid_, SIGSTOP);
}

void MosquittoBroker::Resume() {
  if (running()) kill(pid_, SIGCONT);
}

std::string MosquittoBroker::Log() const {
  std::ifstream in(log_);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

MqttSubscriber::MqttSubscriber(uint16_t port, std::string username, std::string password) {
  mosquitto_lib_init();  // reference counted by libmosquitto: harmless when repeated
  static std::atomic<int> counter{0};
  const std::string id = "coapgate-test-subscriber-" + std::to_string(getpid()) + "-" +
                         std::to_string(counter++);
  mosq_ = mosquitto_new(id.c_str(), /*clean_start=*/true, this);
  if (mosq_ == nullptr) {
    ADD_FAILURE() << "mosquitto_new: " << std::strerror(errno);
    return;
  }
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  if (!username.empty()) mosquitto_username_pw_set(mosq_, username.c_str(), password.c_str());
  mosquitto_reconnect_delay_set(mosq_, 1, 1, false);  // whole seconds; 1 is the least
  mosquitto_connect_v5_callback_set(
      mosq_, [](mosquitto*, void* self, int rc, int, const mosquitto_property*) {
        static_cast<MqttSubscriber*>(self)->OnConnect(rc);
      });
  mosquitto_subscribe_v5_callback_set(
      mosq_, [](mosquitto*, void* self, int, int, const int*, const mosquitto_property*) {
        static_cast<MqttSubscriber*>(self)->OnSubscribe();
      });
  mosquitto_message_v5_callback_set(
      mosq_, [](mosquitto*, void* self, const mosquitto_message* m, const mosquitto_property* p) {
        static_cast<MqttSubscriber*>(self)->OnMessage(m, p);
      });
  mosquitto_connect_async(mosq_, "127.0.0.1", port, 60);
  mosquitto_loop_start(mosq_);
}

MqttSubscriber::~MqttSubscriber() {
  if (mosq_ == nullptr) return;
  mosquitto_disconnect(mosq_);
  mosquitto_loop_stop(mosq_, false);
  mosquitto_destroy(mosq_);
}

void MqttSubscriber::OnConnect(int rc) {
  if (rc == 0) mosquitto_subscribe_v5(mosq_, nullptr, "#", 1, 0, nullptr);
}

void MqttSubscriber::OnSubscribe() {
  std::lock_guard lock(mutex_);
  ++subscribed_;
  changed_.notify_all();
}

void MqttSubscriber::OnMessage(const mosquitto_message* message,
                               const mqtt5__property* properties) {
  ReceivedMessage m;
  m.topic = message->topic;
  m.payload.assign(static_cast<const char*>(message->payload),
                   static_cast<size_t>(message->payloadlen));
  m.qos = message->qos;
  m.retain = message->retain;
  char* content_type = nullptr;
  if (mosquitto_property_read_string(properties, MQTT_PROP_CONTENT_TYPE, &content_type,
                                     false) != nullptr) {
    m.content_type = content_type;
    std::free(content_type);
  }
  bool skip_first = false;
  for (const mosquitto_property* p = properties;;) {
    char* name = nullptr;
    char* value = nullptr;
    p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value,
                                            skip_first);
    if (p == nullptr) break;
    skip_first = true;
    m.user_properties.emplace_back(name, value);
    std::free(name);
    std::free(value);
  }
  std::lock_guard lock(mutex_);
  messages_.push_back(std::move(m));
  changed_.notify_all();
}

bool MqttSubscriber::WaitSubscribed(int count, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return subscribed_ >= count; });
}

bool MqttSubscriber::WaitFor(size_t count, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return messages_.size() >= count; });
}

std::vector<ReceivedMessage> MqttSubscriber::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}

size_t MqttSubscriber::size() const {
  std::lock_guard lock(mutex_);
  return messages_.size();
}

}  // namespace coapgate::test
