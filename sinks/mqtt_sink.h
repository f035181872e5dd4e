// MqttSink: one connection to an MQTT broker (docs/downstream.md), driven by one publisher worker through
// libmosquitto in its non-threaded mode: no libmosquitto thread, all I/O happens inside
// Publish and Service on the worker's thread, against the socket PollFd hands out.
//
// Delivery (sink.h's contract): with QoS 1 a ticket settles from the broker's PUBACK, true for
// reason codes below 0x80 (0x10 "no matching subscribers" included), false for a rejection;
// with QoS 0 it settles true inside Publish, once libmosquitto has taken the message (QoS 0
// promises no more). Publish refuses while not connected, past max_inflight unsettled tickets
// (QoS 1), or past max_inflight messages the socket could not take yet (QoS 0): this is what
// bounds libmosquitto's otherwise unbounded queue (reference F6), also against a hung broker.
//
// A lost connection keeps its tickets outstanding: after the next CONNACK libmosquitto resends
// every unacknowledged QoS 1 message (DUP set, libmosquitto's message__reconnect_reset and
// message__retry_check), and those PUBACKs settle them. Nothing is abandoned on a timer; the
// worker's response budget decides what the device hears, and Abandon ends it at shutdown.
//
// Reconnection: the first attempt is made by the first Service call, so a broker that is down
// at start is no error (reference M01). After a failed attempt or a lost connection the next
// attempt waits 100 ms doubling up to 5 s, each delay jittered ±50 %; a successful CONNACK
// resets it. An attempt without CONNACK is given up after keepalive_s, and a broker that
// stops answering (hung, unplugged) is noticed one to two keepalive intervals after its last
// packet: libmosquitto sends PINGREQ after one silent interval and closes after a second.
// Attempts do not block on the network, except for name resolution: a host name (not an IP
// literal) is resolved with getaddrinfo on the worker thread at every attempt.
//
// Thread contract: Create on the control thread; everything else on the worker thread that
// owns the sink (sink.h), the destructor there or after that thread was joined. counters()
// from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "sinks/sink.h"
#include "sinks/sink_failure_log.h"
#include "sinks/sink_config.h"

struct mosquitto;
struct mqtt5__property;  // libmosquitto's mosquitto_property

namespace coapgate::sinks {

class MqttSink final : public Sink {
 public:
  // Validates `config` and sets the client up (protocol, credentials, TLS files) without
  // connecting. `connection` (0-based) tells the sink's connections apart: it suffixes the
  // client id ("<id><id_infix>-<n>") and the label ("mqtt://host:port#n"). `id_infix` tells
  // several MQTT sinks of one process apart (a broker closes the older of two connections with
  // one client id). Errors are one line naming the setting, e.g. "ca_file: /x: No such file or
  // directory".
  // REQUIRES: `settlement` outlives the sink.
  static Result<std::unique_ptr<MqttSink>, std::string> Create(const MqttSinkConfig& config,
                                                               int connection,
                                                               Settlement* settlement,
                                                               std::string_view id_infix = {});
  // Sends DISCONNECT if the socket takes it at once and closes; never waits for the broker.
  // Settles nothing: call Abandon first if tickets are outstanding.
  ~MqttSink() override;
  MqttSink(const MqttSink&) = delete;
  MqttSink& operator=(const MqttSink&) = delete;

  // Sink
  [[nodiscard]] const std::string& label() const noexcept override { return label_; }
  // REQUIRES: ticket != ~0 (the ticket table's empty mark).
  [[nodiscard]] bool Publish(const Event& event, uint64_t ticket) noexcept override;
  [[nodiscard]] int PollFd(short* events) noexcept override;
  void Service(short revents, uint64_t now_ms) noexcept override;
  [[nodiscard]] int TimeoutMs(uint64_t now_ms) const noexcept override;
  // QoS 1: unacknowledged publishes. QoS 0 has nothing to acknowledge, but publishes still
  // in libmosquitto's out queue count as one, so that a drain waits until the socket took them.
  [[nodiscard]] size_t outstanding() const noexcept override;
  [[nodiscard]] bool available() const noexcept override { return state_ == State::kUp; }
  // Settles every outstanding ticket false. libmosquitto has no way to drop the messages it
  // still holds; should their PUBACKs arrive later, they are ignored.
  void Abandon() noexcept override;

 private:
  enum class State : uint8_t {
    kIdle,        ///< no connection; the next attempt is due at next_attempt_ms_
    kConnecting,  ///< socket open, CONNECT sent or pending, no CONNACK yet
    kUp,          ///< CONNACK success, not lost since
  };

  MqttSink(const MqttSinkConfig& config, std::string label, std::string client_id,
           Settlement* settlement);

  // libmosquitto callbacks (registered in Create as capture-less lambdas).
  void OnConnect(int reason_code) noexcept;
  void OnDisconnect(int rc) noexcept;
  void OnPublish(int mid, int reason_code) noexcept;
  void OnLog(int level, const char* text) noexcept;

  void Connect() noexcept;
  // Reads until the socket has nothing more (see the .cc on libmosquitto's read budget);
  // false if the connection went down meanwhile.
  bool ReadAvailable() noexcept;
  // The connection (or the attempt) ended with libmosquitto error `rc`: counts, logs, and
  // schedules the next attempt. Idempotent while already down.
  void Down(int rc) noexcept;
  void LogFailure(int key, const char* what, const char* why) noexcept;
  [[nodiscard]] uint64_t Jitter(uint64_t delay_ms) noexcept;
  // Builds the MQTT v5 properties of `event` into *properties; returns libmosquitto's error
  // if it refused one (then *properties holds what was added so far, for the caller to free).
  int AddProperties(const Event& event, mqtt5__property** properties) noexcept;

  struct mosquitto* mosq_ = nullptr;
  std::string label_;
  std::string client_id_;
  Settlement* settlement_;
  std::string host_;
  int port_;
  int keepalive_s_;
  int qos_;
  int protocol_;
  bool tls_;
  MqttFormat format_;
  std::string topic_template_;
  std::string error_topic_;
  std::string location_topic_;
  std::string lifecycle_topic_;
  size_t max_inflight_;

  State state_ = State::kIdle;
  bool connect_initialised_ = false;  ///< mosquitto_connect_async has stored host and port
  bool closing_ = false;              ///< in the destructor: callbacks do nothing
  bool attempt_logged_ = false;       ///< this attempt's failure was already logged
  uint64_t now_ms_ = 0;               ///< as of the last Service
  uint64_t next_attempt_ms_ = 0;
  uint64_t backoff_ms_;
  uint64_t rng_;
  int failures_ = 0;                  ///< attempts failed since the last CONNACK success
  int last_failure_key_ = 0;          ///< what the last failure log line was about
  uint64_t last_failure_log_ms_ = 0;
  uint64_t last_publish_warning_ms_ = 0;    ///< rate limit of publish-failure warnings
  SinkFailureLog failure_log_{label_};  ///< refusals, PUBACK rejections, abandons
  std::array<char, 256> library_error_{};  ///< libmosquitto's first error line of an attempt

  // Ticket per MQTT packet id (QoS 1), kNoTicket where none: 65536 entries allocated once.
  std::unique_ptr<uint64_t[]> tickets_;
  std::unique_ptr<uint64_t[]> published_us_;  ///< by packet id, beside tickets_: for counters_.acked
  size_t outstanding_ = 0;
  size_t unwritten_ = 0;  ///< QoS 0: publishes queued since the socket last took everything
  std::vector<char> topic_;    ///< the rendered topic, NUL-terminated; sized at Create
  std::vector<char> scratch_;  ///< NUL-terminated property strings of the current message
};

}  // namespace coapgate::sinks
