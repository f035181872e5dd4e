// Test helper: a real mosquitto broker in a child process on a loopback ephemeral port, and a
// libmosquitto subscriber that records everything published to it. For the MQTT sink's tests
// against the broker's actual behaviour (reference §3.4 M01-M06): no mocks.
//
// Thread contract: MosquittoBroker from one test thread. MqttSubscriber's accessors may be
// called from the test thread while libmosquitto's own thread fills it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

struct mosquitto;
struct mosquitto_message;
struct mqtt5__property;

namespace coapgate::test {

struct MosquittoBrokerOptions {
  // Non-empty: the broker accepts only this user (password_file made by mosquitto_passwd).
  std::string username;
  std::string password;
  // Adds a TLS listener on tls_port() with a server certificate for IP 127.0.0.1, signed by
  // a CA made for this broker (ca_file()).
  bool tls = false;
  // The broker's in-flight window per client, advertised as MQTT v5 Receive Maximum; 0 is
  // unlimited (and not advertised), so that the client under test sets the limit.
  int max_inflight_messages = 0;
};

class MosquittoBroker {
 public:
  // Makes the temp dir, picks the port(s) and writes mosquitto.conf (and the password file,
  // certificates); does not start the broker. A failure shows in error() and makes Start fail.
  explicit MosquittoBroker(MosquittoBrokerOptions options = {});
  // Kills the broker (SIGKILL) if running and removes the temp dir.
  ~MosquittoBroker();
  MosquittoBroker(const MosquittoBroker&) = delete;
  MosquittoBroker& operator=(const MosquittoBroker&) = delete;

  // Starts /usr/sbin/mosquitto and waits (at most 10 s) until its listeners accept TCP
  // connections. False with the reason in error() otherwise.
  bool Start();
  // Starts it again on the same port(s) after Kill9 or Stop.
  bool Restart() { return Start(); }
  void Kill9();      ///< SIGKILL, reaped: a crash, nothing flushed
  void Stop();       ///< SIGTERM (after SIGCONT, should it be paused), reaped
  void Pause();      ///< SIGSTOP: a hung broker; its sockets stay open
  void Resume();     ///< SIGCONT

  [[nodiscard]] bool running() const { return pid_ > 0; }
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] uint16_t tls_port() const { return tls_port_; }  ///< 0 without TLS
  [[nodiscard]] const std::string& ca_file() const { return ca_file_; }
  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] const std::string& error() const { return error_; }
  // The broker's log so far (log_type all, both runs after a restart): for failure messages
  // and for checks of what the broker saw (a DUP flag, a client id).
  [[nodiscard]] std::string Log() const;

 private:
  bool Prepare();
  bool MakeCertificates();
  bool WaitListening(std::chrono::steady_clock::time_point deadline);

  MosquittoBrokerOptions options_;
  std::string dir_;
  std::string conf_;
  std::string log_;
  std::string ca_file_;
  std::string error_;
  uint16_t port_ = 0;
  uint16_t tls_port_ = 0;
  pid_t pid_ = -1;
};

struct ReceivedMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  std::string content_type;  ///< MQTT v5 content type, empty if none
  std::vector<std::pair<std::string, std::string>> user_properties;  ///< in wire order
};

// Subscribes to "#" with QoS 1 over MQTT v5 (libmosquitto's threaded mode) and records every
// message. It reconnects by itself after a broker restart (about once a second) and
// subscribes again. The broker does not forward a publisher's DUP flag, so ReceivedMessage
// has none: check the broker's Log() for that.
class MqttSubscriber {
 public:
  // Empty username: anonymous.
  MqttSubscriber(uint16_t port, std::string username = {}, std::string password = {});
  ~MqttSubscriber();
  MqttSubscriber(const MqttSubscriber&) = delete;
  MqttSubscriber& operator=(const MqttSubscriber&) = delete;

  // Waits until the subscription has been acknowledged `count` times in total (1 after the
  // first connection, 2 after one reconnect, ...). False at the timeout.
  bool WaitSubscribed(int count, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits until at least `count` messages arrived. False at the timeout.
  bool WaitFor(size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  [[nodiscard]] std::vector<ReceivedMessage> messages() const;
  [[nodiscard]] size_t size() const;

 private:
  void OnConnect(int rc);
  void OnSubscribe();
  void OnMessage(const mosquitto_message* message, const mqtt5__property* properties);

  mosquitto* mosq_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  int subscribed_ = 0;
  std::vector<ReceivedMessage> messages_;
};

}  // namespace coapgate::test
