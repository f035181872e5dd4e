// Sink: one downstream destination (a file, one MQTT broker connection, one Kafka producer) as
// one publisher worker drives it. The worker formats each message once into an Event, offers it
// to every configured sink, and answers the device only when all of them have settled it
// (docs/delivery.md: 2.04 only after every sink accepted).
//
// Thread contract: a Sink is created on the control thread and from then on used by exactly one
// publisher worker thread; every method below runs on that thread, and so does every Settle
// call it makes. counters() may be read from any thread (relaxed atomics).
//
// Delivery contract: Publish returning true hands the sink a ticket that it settles exactly
// once, later (from Flush, Service or Abandon, or from inside Publish itself: the worker copes),
// with delivered = true only when the destination acknowledged the message (write(2) took it,
// MQTT PUBACK, Kafka delivery report without error). Publish returning false means refused now
// (down, in-flight cap, queue full): no Settle follows and the device gets 5.03. One message
// may be offered as two events under the same ticket (TELEMETRY_DATA, then its LOCATION):
// each accepted Publish is settled once, so such a ticket settles twice, and the worker
// completes the message when all of them are in (worst status wins).
#pragma once

#include <poll.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/duration_histogram.h"

namespace coapgate::sinks {

enum class EventKind : uint8_t {
  kTelemetry,  ///< TELEMETRY_DATA: the device's message (translated or not)
  kError,      ///< ERROR: the Energy Saver could not translate it; the raw payload rides along
  kLocation,   ///< LOCATION: the device location a translated message carried (after its
               ///< TELEMETRY_DATA, same ticket); payload and translated are those of the message
  kLifecycle,  ///< LIFECYCLE DEVICE_FIRST_TIME_REGISTERED: a device's first interaction with
               ///< any node (engine/first_registration.h); no topic, payload or translation
};

// The envelope's "type" of each kind.
[[nodiscard]] constexpr const char* EventTypeName(EventKind kind) noexcept {
  switch (kind) {
    case EventKind::kTelemetry:
      return "TELEMETRY_DATA";
    case EventKind::kError:
      return "ERROR";
    case EventKind::kLocation:
      return "LOCATION";
    case EventKind::kLifecycle:
      return "LIFECYCLE";
  }
  return "TELEMETRY_DATA";
}

// One message as every sink sees it. Views only, valid during the Publish call: a sink that
// needs any of it later copies it (libmosquitto and librdkafka copy on publish).
struct Event {
  EventKind kind = EventKind::kTelemetry;
  std::string_view id;          ///< the 36-char idempotency key (docs/delivery.md, reliability I6)
  uint64_t received_ms = 0;     ///< Unix epoch ms at receipt
  std::string_view iccid;
  std::string_view imsi;        ///< may be empty
  std::string_view ip;          ///< the device's address as text
  std::string_view topic;       ///< the CoAP `t` query; empty when the device gave none
  std::span<const std::byte> payload;  ///< the device's bytes, as they came
  std::string_view translated;  ///< the Energy Saver's JSON; empty when not translated
  std::string_view error;       ///< kError: the translator's description
  std::string_view envelope;    ///< the docs/downstream.md JSON object of this event, one line, no newline
};

// Where sinks report. Each ticket a sink accepted in Publish is settled exactly once.
class Settlement {
 public:
  virtual void Settle(uint64_t ticket, bool delivered) noexcept = 0;

 protected:
  ~Settlement() = default;
};

// Why a message did not reach a sink: the `cause` of coapgate_sink_failures_total. Every
// refused Publish and every ticket settled failed counts under exactly one cause.
enum class SinkFailure : uint8_t {
  kDown,          ///< refused: not connected (broker away, circuit open, fatal producer)
  kBackpressure,  ///< refused: the sink's in-flight cap or the client's queue is full
  kRejected,      ///< settled failed: the destination refused it (PUBACK >= 0x80, Kafka error)
  kIoError,       ///< settled failed: the write failed (file sink: ENOSPC, EIO, ...)
  kInvalid,       ///< refused: this message cannot be sent (too large, topic does not fit)
  kTimeout,       ///< settled failed: no acknowledgement in time (Kafka message.timeout.ms)
  kAbandoned,     ///< settled failed: shut down (or its packet id reused) before it was acked
  kCount_,
};

// Refused in Publish (no Settle follows) rather than settled failed.
[[nodiscard]] constexpr bool IsRefusal(SinkFailure cause) noexcept {
  return cause == SinkFailure::kDown || cause == SinkFailure::kBackpressure ||
         cause == SinkFailure::kInvalid;
}

[[nodiscard]] constexpr const char* ToString(SinkFailure cause) noexcept {
  switch (cause) {
    case SinkFailure::kDown:
      return "down";
    case SinkFailure::kBackpressure:
      return "backpressure";
    case SinkFailure::kRejected:
      return "rejected";
    case SinkFailure::kIoError:
      return "io_error";
    case SinkFailure::kInvalid:
      return "invalid";
    case SinkFailure::kTimeout:
      return "timeout";
    case SinkFailure::kAbandoned:
      return "abandoned";
    case SinkFailure::kCount_:
      break;
  }
  return "unknown";
}

struct SinkCounters {
  std::atomic<uint64_t> delivered{0};    ///< settled true
  std::atomic<uint64_t> failed{0};       ///< settled false (error, timeout, abandoned)
  std::atomic<uint64_t> refused{0};      ///< Publish returned false
  std::atomic<uint64_t> connects{0};     ///< sessions established (MQTT CONNACK, ...)
  std::atomic<uint64_t> disconnects{0};  ///< sessions lost
  // Delivered messages: time from Publish to the destination's acknowledgement (PUBACK,
  // Kafka delivery report, write(2) of the batch). Recorded by the sink's worker thread only.
  DurationHistogram acked;
  // By SinkFailure: their sum is refused + failed.
  std::atomic<uint64_t> causes[static_cast<size_t>(SinkFailure::kCount_)] = {};

  void Add(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }
  // Counts `n` messages refused or settled failed (IsRefusal) under `cause`, in both totals.
  void Fail(SinkFailure cause, uint64_t n = 1) noexcept {
    Add(IsRefusal(cause) ? refused : failed, n);
    Add(causes[static_cast<size_t>(cause)], n);
  }
  [[nodiscard]] uint64_t Get(SinkFailure cause) const noexcept {
    return causes[static_cast<size_t>(cause)].load(std::memory_order_relaxed);
  }
};

class Sink {
 public:
  virtual ~Sink() = default;

  // For logs: "file:-", "mqtt://127.0.0.1:1883#0", "kafka:telemetry#0".
  [[nodiscard]] virtual const std::string& label() const noexcept = 0;

  // Offers one event under `ticket` (see the delivery contract above).
  [[nodiscard]] virtual bool Publish(const Event& event, uint64_t ticket) noexcept = 0;

  // End of a batch of Publish calls: push out what the sink buffers (the file sink writes).
  virtual void Flush() noexcept {}

  // The one fd the worker should poll for this sink, with *events set to what to wait for
  // (POLLIN, POLLOUT), or -1 when there is none right now (disconnected, file sink).
  [[nodiscard]] virtual int PollFd(short* events) noexcept {
    *events = 0;
    return -1;
  }

  // Runs after every poll, whether or not PollFd was ready: does the sink's I/O, settles what
  // finished, reconnects when due. `revents` is what poll reported for PollFd (0 if none).
  // `now_ms` is CLOCK_MONOTONIC in milliseconds.
  virtual void Service(short revents, uint64_t now_ms) noexcept = 0;

  // How long the worker may sleep before this sink needs Service again without its fd being
  // ready (reconnect backoff, keepalive), in ms; -1 = no such need.
  [[nodiscard]] virtual int TimeoutMs(uint64_t now_ms) const noexcept {
    (void)now_ms;
    return -1;
  }

  // Tickets accepted and not yet settled.
  [[nodiscard]] virtual size_t outstanding() const noexcept = 0;

  // Whether the destination is believed reachable (the circuit is closed). While a sink is
  // neither available nor probe_due, the shards of its worker answer 5.03 at once instead of
  // queueing (circuit breaking), and Publish refuses.
  [[nodiscard]] virtual bool available() const noexcept = 0;

  // Open circuit, half-open moment: a sink that learns of recovery only from a message (Kafka)
  // says true when it wants the next one as a probe. Sinks that reconnect on their own (MQTT)
  // keep the default.
  [[nodiscard]] virtual bool probe_due() const noexcept { return false; }

  // Shutdown gave up waiting: settle every outstanding ticket as not delivered, now, and drop
  // what the sink still holds for them where the library allows it.
  virtual void Abandon() noexcept = 0;

  [[nodiscard]] const SinkCounters& counters() const noexcept { return counters_; }

  // The worker did not offer a message because this sink is down (neither available nor
  // probe_due): counted as refused, cause kDown, as Publish itself would have. Its reason for
  // being down is the sink's own log line.
  void CountRefusedWhileDown() noexcept { counters_.Fail(SinkFailure::kDown); }

 protected:
  SinkCounters counters_;
};

}  // namespace coapgate::sinks
