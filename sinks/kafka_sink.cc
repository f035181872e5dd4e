#include "sinks/kafka_sink.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/clock.h"

namespace coapgate::sinks {
namespace {

// coapgate's producer settings, applied before [sinks.properties] so that those override them.
// Idempotence with acks=all is what makes a delivery report worth a 2.04 and a retry
// duplicate-free (reference §1.4, K03). The message timeout bounds how long a message waits
// for a broker: past the response budget the device already got 5.03, so waiting much longer
// only breeds duplicates (reference §2.2). librdkafka rejects linger.ms >= message.timeout.ms.
// linger.ms, batch.num.messages and the queue cap equal librdkafka 2.0's defaults, pinned here.
constexpr std::pair<const char*, const char*> kDefaults[] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"linger.ms", "5"},
    {"batch.num.messages", "10000"},
    {"queue.buffering.max.messages", "100000"},
    {"message.timeout.ms", "5000"},
};

constexpr int kDestroyFlushMs = 500;       ///< the destructor's last flush: only orphans left
constexpr int kAbandonPollMs = 50;

bool IsPurge(int err) noexcept {
  return err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT;
}

}  // namespace

struct KafkaSink::Callbacks {
  // Runs inside rd_kafka_poll/flush, on the worker thread.
  static void Delivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* message, void* opaque) {
    static_cast<KafkaSink*>(opaque)->OnDelivery(
        static_cast<uint32_t>(reinterpret_cast<uintptr_t>(message->_private)), message->err);
  }

  // Runs inside rd_kafka_poll/flush, on the worker thread.
  static void Error(rd_kafka_t* /*rk*/, int err, const char* reason, void* opaque) {
    static_cast<KafkaSink*>(opaque)->OnError(err, reason);
  }

  // Runs on librdkafka's threads (and in rd_kafka_new): touches nothing of the sink.
  static void Log(const rd_kafka_t* rk, int level, const char* facility, const char* text) {
    const spdlog::level::level_enum spd = level <= 3   ? spdlog::level::err
                                          : level == 4 ? spdlog::level::warn
                                          : level <= 6 ? spdlog::level::info
                                                       : spdlog::level::debug;
    spdlog::log(spd, "librdkafka {} {}: {}", rd_kafka_name(rk), facility, text);
  }
};

Result<std::unique_ptr<KafkaSink>, std::string> KafkaSink::Create(const KafkaSinkConfig& config,
                                                                  int worker,
                                                                  Settlement* settlement) {
  std::unique_ptr<KafkaSink> sink(
      new KafkaSink("kafka:" + config.topic + "#" + std::to_string(worker), settlement));
  if (auto ok = sink->Init(config, worker); !ok) return Fail(std::move(ok.error()));
  return sink;
}

KafkaSink::KafkaSink(std::string label, Settlement* settlement)
    : label_(std::move(label)), settlement_(settlement) {
  slots_.reserve(1024);
  free_slots_.reserve(1024);
}

Result<void, std::string> KafkaSink::Init(const KafkaSinkConfig& config, int worker) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  auto set = [&](const char* prefix, const std::string& name,
                 const std::string& value) -> Result<void, std::string> {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof(errstr)) ==
        RD_KAFKA_CONF_OK) {
      return {};
    }
    rd_kafka_conf_destroy(conf);
    return Fail(prefix + name + ": " + errstr);
  };
  Result<void, std::string> ok = set("", "bootstrap.servers", config.brokers);
  for (const auto& [name, value] : kDefaults) {
    if (ok) ok = set("", name, value);
  }
  if (ok) ok = set("", "client.id", "coapgate-" + std::to_string(worker));
  for (const auto& [name, value] : config.properties) {
    if (ok) ok = set("properties.", name, value);
  }
  if (!ok) return ok;  // `set` destroyed conf

  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &Callbacks::Delivery);
  rd_kafka_conf_set_error_cb(conf, &Callbacks::Error);
  rd_kafka_conf_set_log_cb(conf, &Callbacks::Log);
  // Log lines wait on the main queue and reach Log from rd_kafka_poll, on the worker thread,
  // like every other callback: none of our code runs on librdkafka's own threads (whose
  // creation ThreadSanitizer does not see, and which would race with spdlog's sinks).
  if (rd_kafka_conf_set(conf, "log.queue", "true", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    return Fail(std::string("log.queue: ") + errstr);
  }
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (rk_ == nullptr) {  // the conf is still ours; errstr names the conflicting properties
    rd_kafka_conf_destroy(conf);
    return Fail(std::string("kafka producer: ") + errstr);
  }
  rd_kafka_set_log_queue(rk_, nullptr);  // null: the main queue

  for (auto [handle, name] :
       {std::pair{&topic_, &config.topic}, std::pair{&error_topic_, &config.error_topic},
        std::pair{&location_topic_, &config.location_topic},
        std::pair{&lifecycle_topic_, &config.lifecycle_topic}}) {
    *handle = rd_kafka_topic_new(rk_, name->c_str(), nullptr);
    if (*handle == nullptr) {
      return Fail("topic " + *name + ": " + rd_kafka_err2str(rd_kafka_last_error()));
    }
  }

  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    return Fail(std::string("kafka wake-up pipe: ") + std::strerror(errno));
  }
  wake_read_ = fds[0];
  wake_write_ = fds[1];
  main_queue_ = rd_kafka_queue_get_main(rk_);
  rd_kafka_queue_io_event_enable(main_queue_, wake_write_, "1", 1);
  // librdkafka writes the pipe only when its queue turns non-empty, and the producer started
  // connecting in rd_kafka_new: an error queued before this point would never wake the worker.
  // One byte of our own makes the first Service serve whatever is already there.
  [[maybe_unused]] const ssize_t n = write(wake_write_, "1", 1);
  return {};
}

KafkaSink::~KafkaSink() {
  if (rk_ != nullptr) {
    if (live_ > 0) Abandon();
    // Nothing live is left; this serves whatever orphans' reports still come, bounded.
    rd_kafka_flush(rk_, kDestroyFlushMs);
    if (main_queue_ != nullptr) {
      rd_kafka_queue_io_event_enable(main_queue_, -1, nullptr, 0);
      rd_kafka_queue_destroy(main_queue_);
    }
    if (topic_ != nullptr) rd_kafka_topic_destroy(topic_);
    if (error_topic_ != nullptr) rd_kafka_topic_destroy(error_topic_);
    if (location_topic_ != nullptr) rd_kafka_topic_destroy(location_topic_);
    if (lifecycle_topic_ != nullptr) rd_kafka_topic_destroy(lifecycle_topic_);
    rd_kafka_destroy(rk_);
  }
  if (wake_read_ >= 0) close(wake_read_);
  if (wake_write_ >= 0) close(wake_write_);
}

bool KafkaSink::probe_due() const noexcept {
  return open_ && !fatal_ && MonotonicMs() - last_probe_ms_ >= kProbeIntervalMs;
}

bool KafkaSink::Publish(const Event& event, uint64_t ticket) noexcept {
  if (fatal_) {
    failure_log_.Report(counters_, SinkFailure::kDown, 1, MonotonicMs(),
                        "the producer had a fatal error (logged above); restart coapgate");
    return false;
  }
  if (open_) {
    const uint64_t now = MonotonicMs();
    if (now - last_probe_ms_ < kProbeIntervalMs) {
      failure_log_.Report(counters_, SinkFailure::kDown, 1, now,
                          "circuit open: no broker delivers, one probe a second");
      return false;
    }
    last_probe_ms_ = now;  // this message is the probe
  }
  const uint32_t slot = AcquireSlot(ticket);
  // The array form of rd_kafka_producev: it lets the topic header be left out, and needs no
  // C casts. MSG_F_COPY: librdkafka copies key, value and headers before returning.
  rd_kafka_vu_t vus[10];
  size_t n = 0;
  auto add = [&](rd_kafka_vtype_t type) -> rd_kafka_vu_t& {
    vus[n].vtype = type;
    return vus[n++];
  };
  auto header = [&](const char* name, std::string_view value) {
    auto& h = add(RD_KAFKA_VTYPE_HEADER).u.header;
    h.name = name;
    h.val = value.data();
    h.size = static_cast<ssize_t>(value.size());
  };
  add(RD_KAFKA_VTYPE_RKT).u.rkt = event.kind == EventKind::kError      ? error_topic_
                                  : event.kind == EventKind::kLocation ? location_topic_
                                  : event.kind == EventKind::kLifecycle ? lifecycle_topic_
                                                                        : topic_;
  add(RD_KAFKA_VTYPE_PARTITION).u.i32 = RD_KAFKA_PARTITION_UA;
  add(RD_KAFKA_VTYPE_MSGFLAGS).u.i = RD_KAFKA_MSG_F_COPY;
  add(RD_KAFKA_VTYPE_KEY).u.mem = {const_cast<char*>(event.iccid.data()), event.iccid.size()};
  add(RD_KAFKA_VTYPE_VALUE).u.mem = {const_cast<char*>(event.envelope.data()),
                                     event.envelope.size()};
  header("id", event.id);
  header("iccid", event.iccid);
  header("type", EventTypeName(event.kind));
  if (!event.topic.empty()) header("topic", event.topic);
  add(RD_KAFKA_VTYPE_OPAQUE).u.ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(slot));
  rd_kafka_error_t* error = rd_kafka_produceva(rk_, vus, n);
  if (error != nullptr) {
    const rd_kafka_resp_err_t err = rd_kafka_error_code(error);
    rd_kafka_error_destroy(error);
    // Queue full (K08), fatal producer, oversized message: refused, so the device gets 5.03.
    ReleaseSlot(slot);
    --live_;
    const SinkFailure cause = err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? SinkFailure::kBackpressure
                              : err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
                                  ? SinkFailure::kInvalid
                                  : SinkFailure::kDown;
    failure_log_.Report(counters_, cause, 1, MonotonicMs(), rd_kafka_err2str(err));
    return false;
  }
  return true;
}

uint32_t KafkaSink::AcquireSlot(uint64_t ticket) {
  uint32_t slot;
  if (free_slots_.empty()) {
    slot = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
    // ReleaseSlot must never allocate: the free list can always hold every slot.
    if (free_slots_.capacity() < slots_.capacity()) free_slots_.reserve(slots_.capacity());
  } else {
    slot = free_slots_.back();
    free_slots_.pop_back();
  }
  slots_[slot] = Slot{ticket, SlotState::kLive, MonotonicUs()};
  ++live_;
  return slot;
}

void KafkaSink::ReleaseSlot(uint32_t slot) noexcept {
  slots_[slot].state = SlotState::kFree;
  free_slots_.push_back(slot);  // within capacity (see AcquireSlot)
}

int KafkaSink::PollFd(short* events) noexcept {
  *events = POLLIN;
  return wake_read_;
}

void KafkaSink::Service(short revents, uint64_t /*now_ms*/) noexcept {
  // Drain first, then serve: an event queued after the drain either is served by this poll
  // or, queued after the poll, writes the pipe again (librdkafka re-arms on every serve).
  if ((revents & POLLIN) != 0) {
    char buffer[64];
    while (read(wake_read_, buffer, sizeof(buffer)) > 0) {
    }
  }
  rd_kafka_poll(rk_, 0);
}

int KafkaSink::TimeoutMs(uint64_t /*now_ms*/) const noexcept {
  // The pipe should wake the worker for every report; the periodic poll is the safety net,
  // and while open it keeps error callbacks and probe results flowing.
  return live_ > 0 || open_ ? 1000 : -1;
}

void KafkaSink::OnDelivery(uint32_t slot, int err) noexcept {
  Slot& s = slots_[slot];
  if (s.state == SlotState::kOrphaned) {  // Abandon already settled it
    ReleaseSlot(slot);
    return;
  }
  const uint64_t ticket = s.ticket;
  const uint64_t published_us = s.published_us;
  ReleaseSlot(slot);
  --live_;
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    consecutive_failures_ = 0;
    if (open_ && !fatal_) {
      open_ = false;
      counters_.Add(counters_.connects);
      spdlog::info("{}: circuit closed: a delivery succeeded", label_);
    }
    counters_.Add(counters_.delivered);
    counters_.acked.Record(MonotonicUs() - published_us);
    settlement_->Settle(ticket, true);
    return;
  }
  if (IsPurge(err)) {  // Abandon's doing, logged there
    counters_.Fail(SinkFailure::kAbandoned);
  } else {
    failure_log_.Report(counters_,
                        err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ? SinkFailure::kTimeout
                                                                 : SinkFailure::kRejected,
                        1, MonotonicMs(),
                        rd_kafka_err2str(static_cast<rd_kafka_resp_err_t>(err)));
    if (++consecutive_failures_ >= kOpenAfterFailures) Open("deliveries keep failing");
  }
  settlement_->Settle(ticket, false);
}

void KafkaSink::OnError(int err, const char* reason) noexcept {
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char text[512];
    const rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk_, text, sizeof(text));
    spdlog::critical("{}: fatal producer error, the sink stays down until restart: {}: {}", label_,
                     rd_kafka_err2name(fatal), text);
    Open("fatal error");
    fatal_ = true;
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    Open(reason);
    return;
  }
  // Connection failures and the like: librdkafka retries them and has logged them already.
  spdlog::debug("{}: {}: {}", label_, rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)),
                reason);
}

void KafkaSink::Open(const char* why) noexcept {
  if (open_) return;
  open_ = true;
  last_probe_ms_ = MonotonicMs();
  counters_.Add(counters_.disconnects);
  spdlog::warn("{}: circuit open ({}): refusing messages, probing once a second", label_, why);
}

void KafkaSink::Abandon() noexcept {
  if (live_ == 0) return;
  const size_t before = live_;
  // Non-blocking: a broker thread stuck in a connect or a name lookup must not hold us here.
  rd_kafka_purge(
      rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
  const uint64_t deadline = MonotonicMs() + kAbandonMs;
  while (live_ > 0 && MonotonicMs() < deadline) rd_kafka_poll(rk_, kAbandonPollMs);
  const size_t late = live_;
  for (uint32_t slot = 0; live_ > 0 && slot < slots_.size(); ++slot) {
    Slot& s = slots_[slot];
    if (s.state != SlotState::kLive) continue;
    s.state = SlotState::kOrphaned;  // its report, if it ever comes, only frees the slot
    --live_;
    counters_.Fail(SinkFailure::kAbandoned);
    settlement_->Settle(s.ticket, false);
  }
  spdlog::warn("{}: abandoned {} outstanding messages, {} of them without a delivery report",
               label_, before, late);
}

}  // namespace coapgate::sinks
