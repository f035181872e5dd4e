#include "sinks/mqtt_sink.h"

#include <fcntl.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>

#include "common/clock.h"
#include "sinks/mqtt_topic.h"

namespace coapgate::sinks {
namespace {

constexpr uint64_t kNoTicket = ~uint64_t{0};
constexpr size_t kPacketIds = 65536;  // MQTT packet ids are 16 bits; libmosquitto skips 0
// A restarted broker listens again within about this long; doubling from here reaches the
// cap after six failures.
constexpr uint64_t kFirstBackoffMs = 100;
// Bounds how long a recovered broker waits for us, and the attempts against a dead one.
constexpr uint64_t kMaxBackoffMs = 5000;
// libmosquitto's keepalive clock (mosquitto_loop_misc) counts whole seconds.
constexpr int kConnectedTimeoutMs = 1000;
// See ReadAvailable: with TLS a packet may wait inside OpenSSL's buffer unseen by poll.
constexpr int kTlsOutstandingTimeoutMs = 100;
// Fairness towards the worker's other sinks; what is left is read at the next Service, as
// poll reports the socket readable again at once.
constexpr int kMaxReadRounds = 1024;
// A failure that persists is logged again this often, not at every attempt.
constexpr uint64_t kRepeatLogMs = 60000;
// Room per placeholder in the topic buffer: `t` is at most 253 bytes (codec/topic.h), ICCID
// and IMSI are far shorter.
constexpr size_t kMaxFieldBytes = 256;
constexpr const char* kSystemCaPath = "/etc/ssl/certs";

std::once_flag library_initialised;

// Whether a rate-limited warning may be logged now (at most once per kRepeatLogMs); *last is
// 0 until the first one.
bool TakeLogTurn(uint64_t now_ms, uint64_t* last) noexcept {
  if (*last != 0 && now_ms - *last < kRepeatLogMs) return false;
  *last = std::max<uint64_t>(now_ms, 1);
  return true;
}

std::string ErrnoText(int error) {
  char buffer[128];
  return strerror_r(error, buffer, sizeof(buffer));  // GNU: returns the text
}

// Why a connection or an attempt ended, for the log.
std::string Describe(int rc, int saved_errno) {
  switch (rc) {
    case MOSQ_ERR_ERRNO:
      return ErrnoText(saved_errno);
    case MOSQ_ERR_CONN_LOST:
      return "closed by the broker or reset";
    case MOSQ_ERR_KEEPALIVE:
      return "no answer from the broker within the keepalive interval";
    case MOSQ_ERR_TLS:
      return "TLS error";
    default:
      break;
  }
  // on_disconnect also hands over the reason code of a DISCONNECT the broker sent (v5).
  if (rc >= 0x80) return std::string("broker sent DISCONNECT: ") + mosquitto_reason_string(rc);
  std::string text = mosquitto_strerror(rc);
  if (!text.empty() && text.back() == '.') text.pop_back();
  return text;
}

std::optional<std::string> CheckReadable(const char* setting, const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string(setting) + ": " + path + ": " + ErrnoText(errno);
  close(fd);
  return std::nullopt;
}

// The topic buffer's size for `topic_template`: every placeholder may grow to kMaxFieldBytes.
size_t TopicRoom(std::string_view topic_template) {
  return topic_template.size() +
         kMaxFieldBytes * static_cast<size_t>(std::count(topic_template.begin(),
                                                         topic_template.end(), '{')) +
         1;
}

std::optional<std::string> Validate(const MqttSinkConfig& config, int connection) {
  if (config.host.empty()) return "host: must not be empty";
  if (config.port == 0) return "port: must be 1..65535";
  if (config.qos != 0 && config.qos != 1) {
    return "qos: must be 0 or 1, not " + std::to_string(config.qos);
  }
  if (config.protocol != 4 && config.protocol != 5) {
    return "protocol: must be 5 or 3.1.1 (4), not " + std::to_string(config.protocol);
  }
  if (config.format == MqttFormat::kRaw && config.protocol != 5) {
    return "format: \"raw\" carries the envelope fields as MQTT v5 user properties, so it "
           "needs protocol 5";
  }
  if (config.max_inflight < 1 || config.max_inflight > 65535) {
    return "max_inflight: must be 1..65535, not " + std::to_string(config.max_inflight);
  }
  if (config.keepalive_s < 5 || config.keepalive_s > 65535) {
    return "keepalive_s: must be 5..65535, not " + std::to_string(config.keepalive_s);
  }
  if (connection < 0) return "connection: must be 0 or more, not " + std::to_string(connection);
  if (auto error = CheckTopicTemplate(config.topic_template)) return "topic_template: " + *error;
  if (auto error = CheckTopicTemplate(config.error_topic)) return "error_topic: " + *error;
  if (auto error = CheckTopicTemplate(config.location_topic)) {
    return "location_topic: " + *error;
  }
  if (auto error = CheckTopicTemplate(config.lifecycle_topic)) {
    return "lifecycle_topic: " + *error;
  }
  if (config.username.empty() && !config.password.empty()) return "password: needs a username";
  if (config.cert_file.empty() != config.key_file.empty()) {
    return std::string(config.cert_file.empty() ? "cert_file" : "key_file") +
           ": cert_file and key_file go together";
  }
  if (!config.tls) {
    if (!config.ca_file.empty()) return "ca_file: needs tls = true";
    if (!config.cert_file.empty()) return "cert_file: needs tls = true";
    return std::nullopt;
  }
  if (config.ca_file.empty()) {
    if (auto error = CheckReadable("ca_file", kSystemCaPath)) {
      return *error + " (ca_file is empty, so the system's CA directory is used)";
    }
  } else if (auto error = CheckReadable("ca_file", config.ca_file)) {
    return error;
  }
  if (!config.cert_file.empty()) {
    if (auto error = CheckReadable("cert_file", config.cert_file)) return error;
    if (auto error = CheckReadable("key_file", config.key_file)) return error;
  }
  return std::nullopt;
}

std::string DefaultClientId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    std::strcpy(host, "unknown");
  }
  return std::string("coapgate-") + host + "-" + std::to_string(getpid());
}

}  // namespace

Result<std::unique_ptr<MqttSink>, std::string> MqttSink::Create(const MqttSinkConfig& config,
                                                                int connection,
                                                                Settlement* settlement,
                                                                std::string_view id_infix) {
  if (std::optional<std::string> error = Validate(config, connection)) return Fail(*error);
  std::call_once(library_initialised, [] { mosquitto_lib_init(); });

  std::string client_id = config.client_id.empty() ? DefaultClientId() : config.client_id;
  client_id += std::string(id_infix) + "-" + std::to_string(connection);
  const bool v6 = config.host.find(':') != std::string::npos;
  std::string label = "mqtt://" + std::string(v6 ? "[" : "") + config.host +
                      (v6 ? "]" : "") + ":" + std::to_string(config.port) + "#" +
                      std::to_string(connection);
  std::unique_ptr<MqttSink> sink(
      new MqttSink(config, std::move(label), client_id, settlement));

  // Clean start: a session the broker kept would hold messages for a previous process whose
  // tickets no longer exist; this process's own unacknowledged messages are resent by
  // libmosquitto from memory whatever the broker kept.
  sink->mosq_ = mosquitto_new(client_id.c_str(), /*clean_start=*/true, sink.get());
  if (sink->mosq_ == nullptr) {
    return Fail("client_id: libmosquitto refused \"" + client_id + "\": " + ErrnoText(errno));
  }
  mosquitto* const mosq = sink->mosq_;
  if (config.protocol == 5) {
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    // The broker's Receive Maximum replaces this at CONNACK if it sends one; either way
    // libmosquitto queues past it, and Publish bounds the whole at max_inflight.
    mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, config.max_inflight);
  } else {
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(mosq, static_cast<unsigned>(config.max_inflight));
  }
  // Every PUBLISH is written at once; Nagle would hold one back until the previous segment
  // is acknowledged, a delayed-ACK wait inside the device's response budget.
  mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
  if (!config.username.empty()) {
    const int rc = mosquitto_username_pw_set(
        mosq, config.username.c_str(),
        config.password.empty() ? nullptr : config.password.c_str());
    if (rc != MOSQ_ERR_SUCCESS) return Fail("username: " + std::string(mosquitto_strerror(rc)));
  }
  if (config.tls) {
    const auto or_null = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
    const int rc = mosquitto_tls_set(mosq, or_null(config.ca_file),
                                     config.ca_file.empty() ? kSystemCaPath : nullptr,
                                     or_null(config.cert_file), or_null(config.key_file),
                                     nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      return Fail("ca_file: libmosquitto refused the TLS files: " +
                  std::string(mosquitto_strerror(rc)));
    }
  }
  // Lambdas of a member function may call the private handlers.
  mosquitto_connect_v5_callback_set(
      mosq, [](mosquitto*, void* self, int reason_code, int, const mosquitto_property*) {
        static_cast<MqttSink*>(self)->OnConnect(reason_code);
      });
  mosquitto_disconnect_v5_callback_set(
      mosq, [](mosquitto*, void* self, int rc, const mosquitto_property*) {
        static_cast<MqttSink*>(self)->OnDisconnect(rc);
      });
  mosquitto_publish_v5_callback_set(
      mosq, [](mosquitto*, void* self, int mid, int reason_code, const mosquitto_property*) {
        static_cast<MqttSink*>(self)->OnPublish(mid, reason_code);
      });
  mosquitto_log_callback_set(mosq, [](mosquitto*, void* self, int level, const char* text) {
    static_cast<MqttSink*>(self)->OnLog(level, text);
  });
  return sink;
}

MqttSink::MqttSink(const MqttSinkConfig& config, std::string label, std::string client_id,
                   Settlement* settlement)
    : label_(std::move(label)),
      client_id_(std::move(client_id)),
      settlement_(settlement),
      host_(config.host),
      port_(config.port),
      keepalive_s_(config.keepalive_s),
      qos_(config.qos),
      protocol_(config.protocol),
      tls_(config.tls),
      format_(config.format),
      topic_template_(config.topic_template),
      error_topic_(config.error_topic),
      location_topic_(config.location_topic),
      lifecycle_topic_(config.lifecycle_topic),
      max_inflight_(static_cast<size_t>(config.max_inflight)),
      backoff_ms_(kFirstBackoffMs),
      rng_(MonotonicNs() ^ reinterpret_cast<uintptr_t>(this) ^
           (static_cast<uint64_t>(getpid()) << 32)),
      tickets_(new uint64_t[kPacketIds]),
      published_us_(new uint64_t[kPacketIds]()),
      topic_(std::max({TopicRoom(config.topic_template), TopicRoom(config.error_topic),
                       TopicRoom(config.location_topic), TopicRoom(config.lifecycle_topic)})),
      scratch_(1024) {
  std::fill_n(tickets_.get(), kPacketIds, kNoTicket);
}

MqttSink::~MqttSink() {
  if (mosq_ == nullptr) return;
  closing_ = true;
  // Non-threaded libmosquitto writes the DISCONNECT inside this call if the socket takes it;
  // otherwise it is dropped with the socket, which the broker sees as a lost connection.
  if (state_ != State::kIdle && mosquitto_socket(mosq_) >= 0) mosquitto_disconnect(mosq_);
  mosquitto_destroy(mosq_);
}

bool MqttSink::Publish(const Event& event, uint64_t ticket) noexcept {
  // QoS 0 has no acknowledgement to count, so what bounds libmosquitto's queue is the socket:
  // publishes that had to stay queued (the socket took no more) count against max_inflight
  // until the queue has drained.
  if (qos_ == 0 && !mosquitto_want_write(mosq_)) unwritten_ = 0;
  if (state_ != State::kUp) {
    failure_log_.Report(counters_, SinkFailure::kDown, 1, now_ms_,
                        "not connected to the broker (the connection's own error is logged "
                        "apart)");
    return false;
  }
  if (outstanding_ >= max_inflight_ || unwritten_ >= max_inflight_) {
    failure_log_.Report(counters_, SinkFailure::kBackpressure, 1, now_ms_,
                        "max_inflight messages await the broker's acknowledgement");
    return false;
  }
  const bool telemetry = event.kind == EventKind::kTelemetry;
  const std::string& topic_template = event.kind == EventKind::kError      ? error_topic_
                                      : event.kind == EventKind::kLocation ? location_topic_
                                      : event.kind == EventKind::kLifecycle ? lifecycle_topic_
                                                                            : topic_template_;
  const size_t topic_size =
      RenderTopic(topic_template, event.iccid, event.imsi,
                  telemetry ? event.topic : std::string_view(),
                  std::span<char>(topic_.data(), topic_.size() - 1));
  // LOCATION and LIFECYCLE events have no device bytes of their own: they go as their JSON in
  // either format.
  const std::span<const std::byte> payload =
      format_ == MqttFormat::kRaw && event.kind != EventKind::kLocation &&
              event.kind != EventKind::kLifecycle
          ? event.payload
          : std::as_bytes(std::span(event.envelope));
  mqtt5__property* properties = nullptr;
  int rc = payload.size() <= MQTT_MAX_PAYLOAD ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PAYLOAD_SIZE;
  int mid = 0;
  if (topic_size > 0 && rc == MOSQ_ERR_SUCCESS) {
    topic_[topic_size] = '\0';
    if (protocol_ == 5) rc = AddProperties(event, &properties);
    if (rc == MOSQ_ERR_SUCCESS) {
      rc = mosquitto_publish_v5(mosq_, &mid, topic_.data(), static_cast<int>(payload.size()),
                                payload.data(), qos_, /*retain=*/false, properties);
    }
  }
  mosquitto_property_free_all(&properties);
  if (rc != MOSQ_ERR_SUCCESS) {
    const bool lost = rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_ERRNO;
    counters_.Fail(lost ? SinkFailure::kDown : SinkFailure::kInvalid);
    // A QoS 1 message that failed on the write stays queued in libmosquitto and goes out
    // after the reconnect; its PUBACK finds no ticket and is ignored (the device got 5.03
    // and retries under the same id).
    if (lost) {
      Down(rc);
    } else if (TakeLogTurn(now_ms_, &last_publish_warning_ms_)) {
      // Refusals that a retry cannot cure (a message libmosquitto deems invalid): visible,
      // but once a minute at most, never per message.
      spdlog::warn("{}: cannot publish to \"{}\": {}", label_,
                   std::string_view(topic_.data(), topic_size),
                   topic_size == 0 ? "the rendered topic does not fit" : mosquitto_strerror(rc));
    }
    return false;
  }
  if (qos_ == 0) {
    if (mosquitto_want_write(mosq_)) ++unwritten_;
    // QoS 0 promises nothing past libmosquitto taking it (sink.h allows settling in Publish).
    counters_.Add(counters_.delivered);
    settlement_->Settle(ticket, true);
    return true;
  }
  uint64_t& slot = tickets_[static_cast<uint16_t>(mid)];
  if (slot != kNoTicket) {
    // libmosquitto reused a packet id that is still waiting for its PUBACK: 65535 ids were
    // issued meanwhile (some by publishes that failed on the write). The older ticket can no
    // longer be told apart; settling it failed is the safe side.
    spdlog::warn("{}: packet id {} reused while unacknowledged; its older message counts as "
                 "failed", label_, mid);
    counters_.Fail(SinkFailure::kAbandoned);
    --outstanding_;
    settlement_->Settle(slot, false);
  }
  slot = ticket;
  published_us_[static_cast<uint16_t>(mid)] = MonotonicUs();
  ++outstanding_;
  return true;
}

int MqttSink::AddProperties(const Event& event, mqtt5__property** properties) noexcept {
  struct Pair {
    const char* name;
    std::string_view value;
  };
  std::array<char, 24> received{};
  const auto printed =
      std::to_chars(received.data(), received.data() + received.size(), event.received_ms);
  std::array<Pair, 10> pairs;
  size_t count = 0;
  pairs[count++] = {"id", event.id};
  if (format_ == MqttFormat::kRaw) {
    const bool error = event.kind == EventKind::kError;
    pairs[count++] = {"type", EventTypeName(event.kind)};
    pairs[count++] = {"source", "COAP"};
    pairs[count++] = {"version", "1.0.0"};
    pairs[count++] = {"received",
                      std::string_view(received.data(),
                                       static_cast<size_t>(printed.ptr - received.data()))};
    pairs[count++] = {"iccid", event.iccid};
    if (!event.imsi.empty()) pairs[count++] = {"imsi", event.imsi};
    pairs[count++] = {"ip", event.ip};
    if (!event.topic.empty()) pairs[count++] = {"topic", event.topic};
    if (error) pairs[count++] = {"error", event.error};
  }
  // libmosquitto takes C strings (and copies them): the values go NUL-terminated into
  // scratch_ first, which grows only for an event larger than any before.
  size_t need = 0;
  for (size_t i = 0; i < count; ++i) need += pairs[i].value.size() + 1;
  if (scratch_.size() < need) scratch_.resize(need);
  char* next = scratch_.data();
  for (size_t i = 0; i < count; ++i) {
    const std::string_view value = pairs[i].value;
    if (!value.empty()) std::memcpy(next, value.data(), value.size());
    next[value.size()] = '\0';
    const int rc =
        mosquitto_property_add_string_pair(properties, MQTT_PROP_USER_PROPERTY, pairs[i].name, next);
    if (rc != MOSQ_ERR_SUCCESS) return rc;  // e.g. MOSQ_ERR_MALFORMED_UTF8
    next += value.size() + 1;
  }
  if (format_ == MqttFormat::kRaw) return MOSQ_ERR_SUCCESS;
  return mosquitto_property_add_string(properties, MQTT_PROP_CONTENT_TYPE, "application/json");
}

int MqttSink::PollFd(short* events) noexcept {
  *events = 0;
  // After Down the socket may still be open (a write failed in Publish): it is no longer
  // ours to read; the next attempt closes it.
  if (state_ == State::kIdle) return -1;
  const int fd = mosquitto_socket(mosq_);
  if (fd < 0) return -1;
  *events = static_cast<short>(POLLIN | (mosquitto_want_write(mosq_) ? POLLOUT : 0));
  return fd;
}

void MqttSink::Service(short revents, uint64_t now_ms) noexcept {
  now_ms_ = now_ms;
  if (state_ == State::kIdle) {
    if (now_ms < next_attempt_ms_) return;
    Connect();
    revents = 0;  // they were about the previous socket
    if (state_ == State::kIdle) return;
  }
  if (mosquitto_socket(mosq_) < 0) {
    Down(MOSQ_ERR_NO_CONN);
    return;
  }
  // libmosquitto advances a TLS handshake from loop_read only, also when OpenSSL waits to
  // write (mosquitto_loop does the same), hence POLLOUT counts as a reason to read with TLS.
  const short read_events =
      static_cast<short>(POLLIN | POLLERR | POLLHUP | POLLNVAL | (tls_ ? POLLOUT : 0));
  // With TLS, a timeout wake-up while PUBACKs are due reads too: a packet may wait inside
  // OpenSSL's buffer, where poll cannot see it (TimeoutMs wakes us for exactly that).
  const bool tls_due = tls_ && outstanding_ > 0;
  if (((revents & read_events) != 0 || tls_due) && !ReadAvailable()) return;
  if (mosquitto_want_write(mosq_)) {
    const int rc = mosquitto_loop_write(mosq_, 1);  // writes until EAGAIN whatever the count
    if (rc != MOSQ_ERR_SUCCESS) {
      Down(rc);
      return;
    }
    if (state_ == State::kIdle) return;
  }
  // Keepalive: sends PINGREQ when due, and closes a connection whose broker stayed silent
  // for a keepalive period after it (a SIGSTOPped broker), or that got no CONNACK in time.
  const int rc = mosquitto_loop_misc(mosq_);
  if (rc != MOSQ_ERR_SUCCESS) Down(rc);
}

// libmosquitto 2.0.11's mosquitto_loop_read ignores its max_packets argument: it reads up to
// (queued outgoing + incoming QoS>0 messages, at least 1) packets and stops early as soon as
// errno is EAGAIN after a packet. A read that found nothing sets that, but so can handling a
// packet: a PUBACK releases a queued message, and queueing writes a wake-up byte to a socket
// pair nobody drains in non-threaded mode, which fails with EAGAIN once full. So EAGAIN only
// says "maybe drained": poll decides, and another round follows if data is still waiting.
// With TLS, a record holding several MQTT packets could leave one inside OpenSSL, unseen by
// poll, if libmosquitto stopped early; mosquitto writes one record per packet, and for other
// brokers TimeoutMs keeps such a packet from waiting long.
bool MqttSink::ReadAvailable() noexcept {
  for (int round = 0; round < kMaxReadRounds; ++round) {
    errno = 0;
    const int rc = mosquitto_loop_read(mosq_, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
      Down(rc);
      return false;
    }
    if (state_ == State::kIdle) return false;
    const int fd = mosquitto_socket(mosq_);
    if (fd < 0) {
      Down(MOSQ_ERR_CONN_LOST);
      return false;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) continue;  // stopped at its packet budget
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return true;
  }
  return true;
}

size_t MqttSink::outstanding() const noexcept {
  if (qos_ == 0) {
    return state_ != State::kIdle && mosquitto_socket(mosq_) >= 0 && mosquitto_want_write(mosq_)
               ? 1
               : 0;
  }
  return outstanding_;
}

int MqttSink::TimeoutMs(uint64_t now_ms) const noexcept {
  if (state_ == State::kIdle) {
    if (next_attempt_ms_ <= now_ms) return 0;
    return static_cast<int>(std::min<uint64_t>(next_attempt_ms_ - now_ms, INT_MAX));
  }
  if (tls_ && outstanding_ > 0) return kTlsOutstandingTimeoutMs;
  return kConnectedTimeoutMs;
}

void MqttSink::Abandon() noexcept {
  failure_log_.Report(counters_, SinkFailure::kAbandoned, outstanding_, now_ms_,
                      "stopped before the broker acknowledged them");
  for (size_t mid = 1; mid < kPacketIds && outstanding_ > 0; ++mid) {
    if (tickets_[mid] == kNoTicket) continue;
    const uint64_t ticket = tickets_[mid];
    tickets_[mid] = kNoTicket;
    --outstanding_;
    settlement_->Settle(ticket, false);
  }
}

void MqttSink::Connect() noexcept {
  library_error_[0] = '\0';
  attempt_logged_ = false;
  int rc;
  if (!connect_initialised_) {
    // Stores host, port and keepalive for every later mosquitto_reconnect_async. Neither
    // call waits for the network: the socket is non-blocking (EINPROGRESS), the CONNECT
    // leaves from loop_write and the CONNACK arrives through loop_read.
    rc = mosquitto_connect_async(mosq_, host_.c_str(), port_, keepalive_s_);
    connect_initialised_ = rc != MOSQ_ERR_INVAL && rc != MOSQ_ERR_NOMEM;
  } else {
    rc = mosquitto_reconnect_async(mosq_);
  }
  state_ = State::kConnecting;
  if (rc != MOSQ_ERR_SUCCESS) Down(rc);
}

void MqttSink::Down(int rc) noexcept {
  const int saved_errno = errno;
  if (closing_ || state_ == State::kIdle) return;
  const bool was_up = state_ == State::kUp;
  state_ = State::kIdle;
  std::string why = Describe(rc, saved_errno);
  if (library_error_[0] != '\0') {
    why += " (";
    why += library_error_.data();
    why += ")";
  }
  if (was_up) {
    counters_.Add(counters_.disconnects);
    spdlog::warn("{}: connection lost ({}); {} unacknowledged message(s) kept for resending",
                 label_, why, outstanding_);
  } else {
    if (!attempt_logged_) {
      const int key = rc == MOSQ_ERR_ERRNO ? 1000 + saved_errno : rc;
      LogFailure(key, "cannot connect", why.c_str());
    }
    ++failures_;
  }
  next_attempt_ms_ = now_ms_ + Jitter(backoff_ms_);
  backoff_ms_ = std::min(backoff_ms_ * 2, kMaxBackoffMs);
}

void MqttSink::LogFailure(int key, const char* what, const char* why) noexcept {
  if (key == last_failure_key_ && now_ms_ - last_failure_log_ms_ < kRepeatLogMs) return;
  last_failure_key_ = key;
  last_failure_log_ms_ = now_ms_;
  spdlog::warn("{}: {}: {} (attempt {} since the last success; retrying with backoff up to {} s)",
               label_, what, why, failures_ + 1, kMaxBackoffMs / 1000);
}

void MqttSink::OnConnect(int reason_code) noexcept {
  if (closing_) return;
  if (reason_code == 0) {
    state_ = State::kUp;
    counters_.Add(counters_.connects);
    backoff_ms_ = kFirstBackoffMs;
    failures_ = 0;
    last_failure_key_ = 0;
    if (outstanding_ > 0) {
      spdlog::info("{}: connected as {}; resending {} unacknowledged message(s)", label_,
                   client_id_, outstanding_);
    } else {
      spdlog::info("{}: connected as {}", label_, client_id_);
    }
    return;
  }
  // The socket closes right after (on_disconnect follows); that is the same failure.
  const char* why = protocol_ == 5 ? mosquitto_reason_string(reason_code)
                                   : mosquitto_connack_string(reason_code);
  LogFailure(0x10000 | reason_code, "broker refused the connection", why);
  attempt_logged_ = true;
}

void MqttSink::OnDisconnect(int rc) noexcept {
  // rc 0 means the DISCONNECT was ours (the destructor) or a broker's normal one.
  Down(rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_CONN_LOST : rc);
}

void MqttSink::OnPublish(int mid, int reason_code) noexcept {
  if (mid <= 0 || static_cast<size_t>(mid) >= kPacketIds) return;
  uint64_t& slot = tickets_[static_cast<size_t>(mid)];
  // Empty for QoS 0 (settled in Publish) and for tickets Abandon already settled.
  if (slot == kNoTicket) return;
  const uint64_t ticket = slot;
  slot = kNoTicket;
  --outstanding_;
  const bool delivered = reason_code < 0x80;  // 0x10 "no matching subscribers" is success
  if (delivered) {
    counters_.Add(counters_.delivered);
    counters_.acked.Record(MonotonicUs() - published_us_[static_cast<size_t>(mid)]);
  } else {
    failure_log_.Report(counters_, SinkFailure::kRejected, 1, now_ms_,
                        mosquitto_reason_string(reason_code));
  }
  settlement_->Settle(ticket, delivered);
}

void MqttSink::OnLog(int level, const char* text) noexcept {
  // Keeps the first error of an attempt (OpenSSL's certificate complaint, say) for the
  // failure's log line; everything else libmosquitto says is left out.
  if ((level & MOSQ_LOG_ERR) == 0 || library_error_[0] != '\0' || text == nullptr) return;
  const size_t n = std::min(std::strlen(text), library_error_.size() - 1);
  std::memcpy(library_error_.data(), text, n);
  library_error_[n] = '\0';
}

uint64_t MqttSink::Jitter(uint64_t delay_ms) noexcept {
  // splitmix64: enough to spread the reconnects of many connections; not a secret.
  rng_ += 0x9e3779b97f4a7c15u;
  uint64_t z = rng_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  z ^= z >> 31;
  return delay_ms / 2 + z % (delay_ms + 1);  // uniform in [delay/2, 3*delay/2]
}

}  // namespace coapgate::sinks
