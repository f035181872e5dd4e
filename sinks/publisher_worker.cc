#include "sinks/publisher_worker.h"

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/clock.h"
#include "common/check.h"
#include "sinks/envelope.h"

namespace coapgate::sinks {
namespace {

// Messages taken per shard per pass: bounds the latency one busy shard adds to the others'.
constexpr size_t kBatchPerShard = 512;
// Longest sleep with nothing to do: how often stop requests and sink timers are looked at
// when no fd says anything.
constexpr int kIdleWaitMs = 100;

size_t FormatIp(const std::array<uint8_t, 16>& ip, char* out) noexcept {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  const bool v4 = std::memcmp(ip.data(), kMapped, 12) == 0;
  const char* ok = v4 ? inet_ntop(AF_INET, ip.data() + 12, out, INET_ADDRSTRLEN)
                      : inet_ntop(AF_INET6, ip.data(), out, INET6_ADDRSTRLEN);
  return ok == nullptr ? 0 : std::strlen(out);
}

constexpr uint64_t Ticket(uint32_t shard, uint32_t slot) noexcept {
  return uint64_t{shard} << 32 | slot;
}

}  // namespace

PublisherWorker::PublisherWorker(uint32_t lane, std::atomic<bool>* available)
    : lane_(lane), available_(available) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  // Without its eventfd the worker can never be woken: nothing can be served.
  CHECK(wake_fd_ >= 0, "eventfd for the publisher worker failed");
}

PublisherWorker::~PublisherWorker() {
  if (thread_.joinable()) {
    RequestStop();
    GiveUp();
    Join();
  }
  sinks_.clear();  // before the wake fd: a sink's destructor may still settle
  close(wake_fd_);
}

void PublisherWorker::Start(std::vector<Handoff*> shards,
                            const SnapshotHolder<TemplateSet>* templates,
                            bool reject_untranslatable) {
  shards_ = std::move(shards);
  templates_holder_ = templates;
  reject_untranslatable_ = reject_untranslatable;
  pending_.resize(shards_.size());
  for (size_t i = 0; i < shards_.size(); ++i) pending_[i].resize(shards_[i]->capacity());
  needs_wake_.assign(shards_.size(), false);
  woken_.reserve(shards_.size());
  poll_fds_.reserve(sinks_.size() + 1);
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void PublisherWorker::RequestStop() noexcept {
  stop_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void PublisherWorker::GiveUp() noexcept {
  give_up_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void PublisherWorker::Join() {
  if (thread_.joinable()) thread_.join();
}

void PublisherWorker::Run() {
  const std::string name = "publish-" + std::to_string(lane_);
  pthread_setname_np(pthread_self(), name.c_str());
  while (true) {
    if (give_up_.load(std::memory_order_acquire)) {
      for (auto& sink : sinks_) sink->Abandon();
      WakeShards();
      break;
    }
    // Read before taking: a stop requested after this load finds the queues as they are for
    // good (the shards stopped first), so an empty pass then means nothing is left.
    const bool stopping = stop_.load(std::memory_order_acquire);
    const size_t taken = TakeBatch();
    for (auto& sink : sinks_) sink->Flush();
    WaitForWork(taken > 0);
    WakeShards();
    if (available_ != nullptr) {
      const bool all = std::all_of(sinks_.begin(), sinks_.end(), [](const auto& sink) {
        return sink->available() || sink->probe_due();
      });
      if (available_->load(std::memory_order_relaxed) != all) {
        available_->store(all, std::memory_order_relaxed);
      }
    }
    if (stopping && taken == 0 && Outstanding() == 0) break;
  }
  finished_.store(true, std::memory_order_release);
}

void PublisherWorker::WaitForWork(bool busy) {
  const uint64_t now = MonotonicMs();
  int timeout = busy ? 0 : kIdleWaitMs;
  poll_fds_.clear();
  poll_fds_.push_back({wake_fd_, POLLIN, 0});
  for (auto& sink : sinks_) {
    short events = 0;
    const int fd = sink->PollFd(&events);
    poll_fds_.push_back({fd, fd < 0 ? short{0} : events, 0});  // fd < 0: poll ignores it
    const int sink_timeout = sink->TimeoutMs(now);
    if (sink_timeout >= 0) timeout = std::min(timeout, sink_timeout);
  }
  if (poll(poll_fds_.data(), poll_fds_.size(), timeout) > 0 && (poll_fds_[0].revents & POLLIN)) {
    uint64_t ignored;
    [[maybe_unused]] const ssize_t n = read(wake_fd_, &ignored, sizeof(ignored));
  }
  const uint64_t after = MonotonicMs();
  for (size_t i = 0; i < sinks_.size(); ++i) sinks_[i]->Service(poll_fds_[i + 1].revents, after);
}

size_t PublisherWorker::TakeBatch() {
  if (templates_holder_ != nullptr) {
    const std::shared_ptr<const TemplateSet> before = templates_;
    templates_holder_->Refresh(&templates_generation_, &templates_);
    if (templates_ != before) translators_.clear();  // they hold the old programs
  }
  size_t taken = 0;
  for (uint32_t i = 0; i < shards_.size(); ++i) {
    uint32_t slot;
    for (size_t n = 0; n < kBatchPerShard && shards_[i]->PopOutbound(lane_, &slot); ++n) {
      Publish(i, slot);
      ++taken;
    }
  }
  return taken;
}

bool PublisherWorker::Translate(const InflightMessage& m) {
  json_size_ = 0;
  error_size_ = 0;
  location_.reset();
  if (templates_ == nullptr) return true;
  const TemplateSet::ProgramPtr& program = templates_->For(m.Iccid());
  if (program == nullptr) return true;
  auto it = translators_.find(program.get());
  if (it == translators_.end()) it = translators_.try_emplace(program.get(), program).first;
  // Grows only for a larger payload than seen before: no allocation in the steady state.
  const size_t need = program->MaxOutputSize(m.payload_length);
  if (json_.size() < need) json_.resize(need);
  auto json = it->second.Translate(m.Payload(), json_);
  if (json) {
    json_size_ = *json;
    location_ = it->second.location();
    return true;
  }
  error_size_ = energysaver::FormatError(json.error(), error_);
  return false;
}

void PublisherWorker::PublishLifecycle(uint32_t shard_index, uint32_t slot) {
  const InflightMessage& m = shards_[shard_index]->published(slot);
  char ip[INET6_ADDRSTRLEN];
  EnvelopeFields f{};
  f.id = MakeLifecycleId(m.Iccid());
  f.received_ms = m.received_ms;
  f.iccid = m.Iccid();
  f.imsi = m.Imsi();
  f.ip = std::string_view(ip, FormatIp(m.ip, ip));
  const size_t need = MaxLifecycleEnvelopeSize(f);
  if (envelope_.size() < need) envelope_.resize(need);  // grows to the largest event, once
  const size_t length = FormatLifecycleEnvelope(f, envelope_);
  char id[kMessageIdTextLength];
  FormatMessageId(f.id, id);

  Event event;
  event.kind = EventKind::kLifecycle;
  event.id = std::string_view(id, sizeof(id));
  event.received_ms = m.received_ms;
  event.iccid = f.iccid;
  event.imsi = f.imsi;
  event.ip = f.ip;
  event.envelope = std::string_view(envelope_.data(), length);
  Offer(shard_index, slot, event, nullptr, false);
}

void PublisherWorker::Publish(uint32_t shard_index, uint32_t slot) {
  const InflightMessage& m = shards_[shard_index]->published(slot);
  if (m.lifecycle) {
    PublishLifecycle(shard_index, slot);
    return;
  }
  char ip[INET6_ADDRSTRLEN];
  EnvelopeFields f;
  f.id = MakeMessageId(m.Iccid(), m.message_id, m.Token(), m.Topic(), m.Payload());
  f.received_ms = m.received_ms;
  f.iccid = m.Iccid();
  f.imsi = m.Imsi();
  f.ip = std::string_view(ip, FormatIp(m.ip, ip));
  f.topic = m.Topic();
  f.payload = m.Payload();
  const bool translated = Translate(m);
  f.json_payload = std::string_view(json_.data(), json_size_);
  const std::string_view error(error_.data(), error_size_);
  const size_t need = translated ? MaxEnvelopeSize(f) : MaxErrorEnvelopeSize(f, error);
  if (envelope_.size() < need) envelope_.resize(need);  // grows to the largest event, once
  const size_t length = translated ? FormatTelemetryEnvelope(f, envelope_)
                                   : FormatErrorEnvelope(f, error, envelope_);
  char id[kMessageIdTextLength];
  FormatMessageId(f.id, id);

  Event event;
  event.kind = translated ? EventKind::kTelemetry : EventKind::kError;
  event.id = std::string_view(id, sizeof(id));
  event.received_ms = m.received_ms;
  event.iccid = f.iccid;
  event.imsi = f.imsi;
  event.ip = f.ip;
  event.topic = f.topic;
  event.payload = f.payload;
  event.translated = f.json_payload;
  event.error = error;
  event.envelope = std::string_view(envelope_.data(), length);

  // The LOCATION event: its own id (derived, so consumers keying by id keep both events),
  // the same device and time.
  Event location;
  char location_id[kMessageIdTextLength];
  if (location_) {
    EnvelopeFields lf = f;
    lf.id = MakeLocationId(f.id);
    FormatMessageId(lf.id, location_id);
    const size_t location_need =
        MaxLocationEnvelopeSize(lf, location_->longitude, location_->latitude);
    if (location_envelope_.size() < location_need) location_envelope_.resize(location_need);
    location = event;
    location.kind = EventKind::kLocation;
    location.id = std::string_view(location_id, sizeof(location_id));
    location.envelope = std::string_view(
        location_envelope_.data(),
        FormatLocationEnvelope(lf, location_->longitude, location_->latitude,
                               location_envelope_));
  }
  Offer(shard_index, slot, event, location_ ? &location : nullptr,
        !translated && reject_untranslatable_);
}

void PublisherWorker::Offer(uint32_t shard_index, uint32_t slot, const Event& event,
                            const Event* location, bool bad_payload) {
  const size_t events = location != nullptr ? 2 : 1;

  // One settlement per sink and event, plus one released below: a sink may settle inside
  // Publish, and the message must not complete before every sink has seen every event.
  Pending& p = pending_[shard_index][slot];
  p = Pending{static_cast<uint16_t>(sinks_.size() * events + 1), false, bad_payload};
  const uint64_t ticket = Ticket(shard_index, slot);
  // A sink known down (the shards' flag lags by a loop turn) would refuse: then the others
  // are not offered the message either, since the device will retry it anyway (5.03) and
  // each would hold a duplicate.
  const bool all_up = std::all_of(sinks_.begin(), sinks_.end(), [](const auto& sink) {
    return sink->available() || sink->probe_due();
  });
  for (auto& sink : sinks_) {
    if (!all_up && !sink->available() && !sink->probe_due()) sink->CountRefusedWhileDown();
    const bool took = all_up && sink->Publish(event, ticket);
    if (!took) Settle(ticket, false);
    // After its TELEMETRY_DATA on each sink, so a consumer of one stream sees the message
    // first; not offered where that was refused (the device retries the whole message).
    if (location != nullptr && (!took || !sink->Publish(*location, ticket))) {
      Settle(ticket, false);
    }
  }
  Settle(ticket, true);
}

void PublisherWorker::Settle(uint64_t ticket, bool delivered) noexcept {
  const auto shard = static_cast<uint32_t>(ticket >> 32);
  const auto slot = static_cast<uint32_t>(ticket);
  Pending& p = pending_[shard][slot];
  CHECK(p.remaining != 0, "a sink settled a ticket twice");
  p.failed = p.failed || !delivered;
  if (--p.remaining != 0) return;
  const Outcome outcome = p.failed        ? Outcome::kUnavailable
                          : p.bad_payload ? Outcome::kBadPayload
                                          : Outcome::kAccepted;
  shards_[shard]->Complete(lane_, slot, outcome);
  if (!needs_wake_[shard]) {
    needs_wake_[shard] = true;
    woken_.push_back(shard);
  }
}

void PublisherWorker::WakeShards() noexcept {
  for (uint32_t shard : woken_) {
    shards_[shard]->WakeShard();
    needs_wake_[shard] = false;
  }
  woken_.clear();
}

size_t PublisherWorker::Outstanding() const noexcept {
  size_t n = 0;
  for (const auto& sink : sinks_) n += sink->outstanding();
  return n;
}

}  // namespace coapgate::sinks
