// Server's answers to the admin listener: the Prometheus exposition of every counter the
// SIGUSR1 summary logs, plus gauges and the request-duration histogram, and the health and
// readiness probes. Runs on the admin listener's threads: it reads only atomics and the
// registry snapshot (whose holder locks), and sums each shard's relaxed counters, gauges and
// DurationHistogram at scrape time, so the data path pays nothing for it. Every family is in
// docs/operations.md's table (tests/e2e/test_admin.py holds the two in step).
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/duration_histogram.h"

#include "engine/server.h"

#ifndef COAPGATE_VERSION
#define COAPGATE_VERSION "unknown"
#endif

namespace coapgate::engine {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Prometheus names allow [a-zA-Z0-9_:]; our counter names use '.' in reply codes.
std::string MetricName(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c == '.' || c == '-') c = '_';
  }
  return out;
}

ClientMetric Value(double value, MetricType type, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  if (type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

// Counters end in _total (the serializer writes names as given).
MetricFamily Family(std::string name, std::string help, MetricType type,
                    std::vector<ClientMetric> metrics) {
  if (type == MetricType::Counter) name += "_total";
  return MetricFamily{std::move(name), std::move(help), type, std::move(metrics)};
}

// A DurationHistogram snapshot (the shards' merged) as a Prometheus histogram in seconds.
ClientMetric Histogram(const DurationHistogram::Snapshot& s) {
  ClientMetric m;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < DurationHistogram::kBuckets; ++i) {
    cumulative += s.counts[i];
    ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < DurationHistogram::kBoundsUs.size()
                             ? static_cast<double>(DurationHistogram::kBoundsUs[i]) / 1e6
                             : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(bucket);
  }
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = static_cast<double>(s.sum_us) / 1e6;
  return m;
}

}  // namespace

std::string Server::MetricsText() const {
  std::vector<MetricFamily> families;
  const auto add = [&](std::string name, std::string help, MetricType type,
                       std::vector<ClientMetric> metrics) {
    families.push_back(Family(std::move(name), std::move(help), type, std::move(metrics)));
  };
  // A family of one unlabelled value.
  const auto single = [&](std::string name, std::string help, MetricType type, double value) {
    add(std::move(name), std::move(help), type, {Value(value, type)});
  };
  const auto gauge = [&](std::string name, std::string help, double value) {
    single(std::move(name), std::move(help), MetricType::Gauge, value);
  };
  const auto counter = [&](std::string name, std::string help, uint64_t value) {
    single(std::move(name), std::move(help), MetricType::Counter, static_cast<double>(value));
  };
  const auto gauges = [&](std::string name, std::string help, std::vector<ClientMetric> metrics) {
    add(std::move(name), std::move(help), MetricType::Gauge, std::move(metrics));
  };
  const auto counters = [&](std::string name, std::string help,
                            std::vector<ClientMetric> metrics) {
    add(std::move(name), std::move(help), MetricType::Counter, std::move(metrics));
  };

  add("coapgate_build_info", "coapgate's version; always 1", MetricType::Gauge,
      {Value(1, MetricType::Gauge, {{"version", COAPGATE_VERSION}})});
  gauge("coapgate_start_time_seconds", "Unix time the process started",
        static_cast<double>(started_ms_) / 1000.0);

  // The shard counters, summed: replies by code and drops by reason as labels of one family
  // each, every other counter a family of its own (new counters appear without edits here).
  std::vector<ClientMetric> replies;
  std::vector<ClientMetric> drops;
  for (size_t i = 0; i < static_cast<size_t>(Counter::kCount_); ++i) {
    const auto id = static_cast<Counter>(i);
    uint64_t total = 0;
    for (const auto& shard : shards_) total += shard->counters().Get(id);
    const std::string_view name = ToString(id);
    const auto value = static_cast<double>(total);
    if (name.starts_with("reply_")) {
      replies.push_back(Value(value, MetricType::Counter,
                              {{"code", std::string(name.substr(6))}}));
    } else if (name.starts_with("drop_")) {
      drops.push_back(Value(value, MetricType::Counter, {{"reason", std::string(name.substr(5))}}));
    } else {
      counter("coapgate_" + MetricName(name), "counted by the shards: " + std::string(name), total);
    }
  }
  counters("coapgate_replies", "CoAP replies sent, by response code", std::move(replies));
  counters("coapgate_datagrams_dropped", "datagrams dropped unanswered, by reason",
           std::move(drops));

  if (shards_.front()->dtls_counters() != nullptr) {
    ForEachDtlsCounter([&](const char* name, uint64_t total) {
      counter("coapgate_dtls_" + MetricName(name), "DTLS endpoint counter " + std::string(name),
              total);
    });
  }

  // The per-shard view of the SIGUSR1 summary's "(per shard): received=..." line.
  std::vector<ClientMetric> received;
  for (const auto& shard : shards_) {
    received.push_back(Value(static_cast<double>(shard->counters().Get(Counter::kReceived)),
                             MetricType::Counter,
                             {{"shard", std::to_string(&shard - shards_.data())}}));
  }
  counters("coapgate_shard_received", "datagrams read from the sockets, per shard",
           std::move(received));

  // The bootstrap worker's counters (its replies are not in coapgate_replies_total: the worker
  // answers GET /bootstrap itself).
  counters("coapgate_bootstrap_replies",
           "GET /bootstrap answers sent by the bootstrap worker, by code",
           {Value(static_cast<double>(bootstrap_->replied_205()), MetricType::Counter,
                  {{"code", "2.05"}}),
            Value(static_cast<double>(bootstrap_->replied_500()), MetricType::Counter,
                  {{"code", "5.00"}}),
            Value(static_cast<double>(bootstrap_->replied_503()), MetricType::Counter,
                  {{"code", "5.03"}})});
  // The summary's bootstrap queue_full is the shards' bootstrap_queue_full above (every
  // refused Submit is counted by both; the worker's own count has no family of its own, since
  // the names would collide).
  counter("coapgate_bootstrap_expired",
          "GET /bootstrap answered 5.03: waited longer than coap.response_budget_ms in the queue",
          bootstrap_->expired());
  counter("coapgate_bootstrap_coalesced",
          "GET /bootstrap answered from another queued request's key lookup (one device's copies)",
          bootstrap_->coalesced());
  counter("coapgate_bootstrap_send_failed", "bootstrap replies the kernel refused to send",
          bootstrap_->send_failures());

  // Per shard, as of the end of its last loop turn (each shard publishes these once per turn).
  size_t sessions = 0;
  size_t handshakes = 0;
  std::vector<ClientMetric> inflight;
  std::vector<ClientMetric> dedup_devices;
  std::vector<ClientMetric> dedup_devices_capacity;
  std::vector<ClientMetric> dedup_exchanges;
  std::vector<ClientMetric> dedup_exchanges_capacity;
  std::vector<ClientMetric> horizon;
  std::vector<ClientMetric> table_bound_horizon;
  DurationHistogram::Snapshot durations;
  for (const auto& shard : shards_) {
    const std::vector<ClientMetric::Label> label{{"shard", std::to_string(&shard - shards_.data())}};
    // Two loads of one turn's values: clamp in case the handshakes are a turn newer.
    const size_t shard_sessions = shard->dtls_sessions();
    const size_t shard_handshakes = shard->dtls_handshakes();
    handshakes += shard_handshakes;
    sessions += shard_sessions > shard_handshakes ? shard_sessions - shard_handshakes : 0;
    inflight.push_back(Value(shard->pending(), MetricType::Gauge, label));
    dedup_devices.push_back(Value(shard->exchange_devices_in_use(), MetricType::Gauge, label));
    dedup_devices_capacity.push_back(
        Value(shard->exchange_device_capacity(), MetricType::Gauge, label));
    dedup_exchanges.push_back(Value(shard->exchange_entries_in_use(), MetricType::Gauge, label));
    dedup_exchanges_capacity.push_back(
        Value(static_cast<double>(uint64_t{shard->exchange_device_capacity()} *
                                  shard->exchange_per_device()),
              MetricType::Gauge, label));
    if (shard->counters().horizon_s() != UINT32_MAX) {  // after the shard's first loop turn
      horizon.push_back(Value(shard->counters().horizon_s(), MetricType::Gauge, label));
      table_bound_horizon.push_back(
          Value(shard->counters().table_bound_horizon_s(), MetricType::Gauge, label));
    }
    durations.Add(shard->request_durations().Read());
  }
  gauge("coapgate_dtls_sessions", "established DTLS sessions", static_cast<double>(sessions));
  gauge("coapgate_dtls_handshakes_in_progress",
        "DTLS handshakes started (cookie verified) and not yet finished",
        static_cast<double>(handshakes));
  gauges("coapgate_dedup_devices", "exchange memory: device records in use, per shard",
         std::move(dedup_devices));
  gauges("coapgate_dedup_devices_capacity",
         "exchange memory: device records per shard (coap.dedup_devices)",
         std::move(dedup_devices_capacity));
  gauges("coapgate_dedup_exchanges",
         "exchange memory: exchanges remembered (pending or answered), per shard",
         std::move(dedup_exchanges));
  gauges("coapgate_dedup_exchanges_capacity",
         "exchange memory: records x coap.dedup_per_device, per shard",
         std::move(dedup_exchanges_capacity));
  gauges("coapgate_dedup_horizon_seconds",
         "age of the youngest exchange evicted early (any cause) in the last "
         "1-2 minutes; the exchange lifetime when none was, per shard",
         std::move(horizon));
  gauges("coapgate_dedup_horizon_table_bound_seconds",
         "as coapgate_dedup_horizon_seconds, evictions for table space only: "
         "below the exchange lifetime, the table is too small for the fleet",
         std::move(table_bound_horizon));
  families.push_back(MetricFamily{"coapgate_request_duration_seconds",
                                  "time from a request's datagram to its answer being sent, one "
                                  "observation per reply in coapgate_replies_total",
                                  MetricType::Histogram, {Histogram(durations)}});
  gauges("coapgate_inflight_messages",
         "messages accepted and not yet answered or settled, per shard", std::move(inflight));
  gauge("coapgate_devices", "devices in the registry snapshot in force",
        static_cast<double>(registry_->current()->size()));
  gauge("coapgate_registry_generation",
        "device registry snapshots installed: 1 at start, one more per reload",
        static_cast<double>(registry_->generation()));
  gauge("coapgate_registry_load_timestamp_seconds",
        "Unix time the device registry snapshot in force finished loading",
        static_cast<double>(registry_loaded_ms_.load(std::memory_order_relaxed)) / 1000.0);
  gauge("coapgate_registry_load_duration_seconds",
        "how long loading the device registry snapshot in force took (reading its source)",
        static_cast<double>(registry_load_us_.load(std::memory_order_relaxed)) / 1e6);
  counter("coapgate_registry_reloads", "successful SIGHUP reloads of the devices",
          reloads_.load(std::memory_order_relaxed));
  counter("coapgate_registry_reloads_refused",
          "reloads refused because they would remove more than "
          "devices.reload_max_removed_percent of the devices",
          reloads_refused_.load(std::memory_order_relaxed));
  // Per configured sink, its connections summed: outcomes, sessions, and why messages failed.
  std::vector<ClientMetric> sink_messages, sink_failures, sink_connects, sink_disconnects,
      sink_acked;
  for (const sinks::PublisherPool::SinkTotals& t : publishers_->Totals()) {
    for (const auto& [outcome, n] : {std::pair{"delivered", t.delivered}, {"failed", t.failed},
                                     {"refused", t.refused}}) {
      sink_messages.push_back(Value(static_cast<double>(n), MetricType::Counter,
                                    {{"sink", t.label}, {"outcome", outcome}}));
    }
    for (size_t k = 0; k < static_cast<size_t>(sinks::SinkFailure::kCount_); ++k) {
      sink_failures.push_back(
          Value(static_cast<double>(t.causes[k]), MetricType::Counter,
                {{"sink", t.label}, {"cause", sinks::ToString(static_cast<sinks::SinkFailure>(k))}}));
    }
    sink_connects.push_back(Value(static_cast<double>(t.connects), MetricType::Counter,
                                  {{"sink", t.label}}));
    sink_disconnects.push_back(Value(static_cast<double>(t.disconnects), MetricType::Counter,
                                     {{"sink", t.label}}));
    sink_acked.push_back(Histogram(t.acked));
    sink_acked.back().label = {{"sink", t.label}};
  }
  counters("coapgate_sink_messages",
           "messages offered to each sink, by outcome (delivered = acknowledged)",
           std::move(sink_messages));
  counters("coapgate_sink_failures", "messages refused or failed by each sink, by cause",
           std::move(sink_failures));
  families.push_back(MetricFamily{"coapgate_sink_ack_duration_seconds",
                                  "time from handing a message to a sink to its acknowledgement "
                                  "(PUBACK, Kafka delivery report, the file write), delivered "
                                  "messages, per sink",
                                  MetricType::Histogram, std::move(sink_acked)});
  counters("coapgate_sink_connects", "sink sessions established", std::move(sink_connects));
  counters("coapgate_sink_disconnects", "sink sessions lost", std::move(sink_disconnects));
  std::vector<ClientMetric> sinks_up;
  std::vector<ClientMetric> queued;
  const std::atomic<bool>* flags = publishers_->available_flags();
  for (uint32_t lane = 0; lane < publishers_->lanes(); ++lane) {
    const std::vector<ClientMetric::Label> label{{"lane", std::to_string(lane)}};
    const bool up = flags == nullptr || flags[lane].load(std::memory_order_relaxed);
    sinks_up.push_back(Value(up ? 1 : 0, MetricType::Gauge, label));
    uint64_t depth = 0;
    for (const auto& shard : shards_) depth += shard->handoff().queued(lane);
    queued.push_back(Value(static_cast<double>(depth), MetricType::Gauge, label));
  }
  gauges("coapgate_publisher_queue_depth",
         "messages queued for the publisher lane's worker, summed over shards", std::move(queued));
  gauges("coapgate_sinks_up", "1 while every sink of the publisher lane accepts messages",
         std::move(sinks_up));
  gauge("coapgate_shards_progressing",
        "1 while every shard completes loop turns (the watchdog's view)",
        healthy_.load(std::memory_order_relaxed) ? 1 : 0);
  return prometheus::TextSerializer().Serialize(families);
}

admin::Probe Server::Healthz() const {
  if (!healthy_.load(std::memory_order_acquire)) {
    return {false, "unhealthy: a shard made no progress in the last check interval"};
  }
  return {true, "ok"};
}

admin::Probe Server::Readyz() const {
  if (!serving_.load(std::memory_order_acquire)) return {false, "not ready: starting"};
  if (draining_.load(std::memory_order_acquire)) return {false, "not ready: draining"};
  if (devices_missing_.load(std::memory_order_acquire)) {
    return {false, "not ready: the devices file is missing (every device gets 4.01)"};
  }
  const std::atomic<bool>* flags = publishers_->available_flags();
  for (uint32_t lane = 0; flags != nullptr && lane < publishers_->lanes(); ++lane) {
    if (!flags[lane].load(std::memory_order_acquire)) {
      return {false, "not ready: a sink is down (lane " + std::to_string(lane) + ")"};
    }
  }
  return {true, "ready"};
}

}  // namespace coapgate::engine
