// Server's answers to the admin listener: the Prometheus exposition of every counter the
// SIGUSR1 summary logs, plus gauges and the request-duration histogram, and the health and
// readiness probes. Runs on the admin listener's threads: it reads only atomics and the
// registry snapshot (whose holder locks), and sums each shard's relaxed counters, gauges and
// DurationHistogram at scrape time, so the data path pays nothing for it. Every family is in
// docs/operations.md's table (tests/e2e/test_admin.py holds the two in step).
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <iterator>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/duration_histogram.h"
#include "common/rfc3339.h"

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
  families.push_back(Family("coapgate_build_info", "coapgate's version; always 1",
                            MetricType::Gauge,
                            {Value(1, MetricType::Gauge, {{"version", COAPGATE_VERSION}})}));
  families.push_back(Family("coapgate_start_time_seconds", "Unix time the process started",
                            MetricType::Gauge,
                            {Value(static_cast<double>(started_ms_) / 1000.0, MetricType::Gauge)}));

  // The shard counters, summed: replies by code and drops by reason as labels of one family
  // each, every other counter a family of its own (new counters appear without edits here).
  std::vector<ClientMetric> replies;
  std::vector<ClientMetric> drops;
  for (size_t i = 0; i < static_cast<size_t>(Counter::kCount_); ++i) {
    const auto counter = static_cast<Counter>(i);
    uint64_t total = 0;
    for (const auto& shard : shards_) total += shard->counters().Get(counter);
    const std::string_view name = ToString(counter);
    const auto value = static_cast<double>(total);
    if (name.starts_with("reply_")) {
      replies.push_back(Value(value, MetricType::Counter,
                              {{"code", std::string(name.substr(6))}}));
    } else if (name.starts_with("drop_")) {
      drops.push_back(Value(value, MetricType::Counter, {{"reason", std::string(name.substr(5))}}));
    } else {
      families.push_back(Family("coapgate_" + MetricName(name), "counted by the shards: " + std::string(name),
                                MetricType::Counter, {Value(value, MetricType::Counter)}));
    }
  }
  families.push_back(Family("coapgate_replies", "CoAP replies sent, by response code",
                            MetricType::Counter, std::move(replies)));
  families.push_back(Family("coapgate_datagrams_dropped", "datagrams dropped unanswered, by reason",
                            MetricType::Counter, std::move(drops)));

  if (shards_.front()->dtls_counters() != nullptr) {
    ForEachDtlsCounter([&](const char* name, uint64_t total) {
      families.push_back(Family("coapgate_dtls_" + MetricName(name), "DTLS endpoint counter " +
                                std::string(name), MetricType::Counter,
                                {Value(static_cast<double>(total), MetricType::Counter)}));
    });
  }

  // The per-shard view of the SIGUSR1 summary's "(per shard): received=..." line.
  std::vector<ClientMetric> received;
  for (const auto& shard : shards_) {
    received.push_back(Value(static_cast<double>(shard->counters().Get(Counter::kReceived)),
                             MetricType::Counter,
                             {{"shard", std::to_string(&shard - shards_.data())}}));
  }
  families.push_back(Family("coapgate_shard_received", "datagrams read from the sockets, per shard",
                            MetricType::Counter, std::move(received)));

  // The bootstrap worker's counters (its replies are not in coapgate_replies_total: the worker
  // answers GET /bootstrap itself).
  const auto counter = [&](std::string name, std::string help, uint64_t value) {
    families.push_back(Family(std::move(name), std::move(help), MetricType::Counter,
                              {Value(static_cast<double>(value), MetricType::Counter)}));
  };
  families.push_back(Family(
      "coapgate_bootstrap_replies", "GET /bootstrap answers sent by the bootstrap worker, by code",
      MetricType::Counter,
      {Value(static_cast<double>(bootstrap_->replied_205()), MetricType::Counter,
             {{"code", "2.05"}}),
       Value(static_cast<double>(bootstrap_->replied_500()), MetricType::Counter,
             {{"code", "5.00"}}),
       Value(static_cast<double>(bootstrap_->replied_503()), MetricType::Counter,
             {{"code", "5.03"}})}));
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
  families.push_back(Family("coapgate_dtls_sessions", "established DTLS sessions",
                            MetricType::Gauge, {Value(static_cast<double>(sessions), MetricType::Gauge)}));
  families.push_back(Family("coapgate_dtls_handshakes_in_progress",
                            "DTLS handshakes started (cookie verified) and not yet finished",
                            MetricType::Gauge,
                            {Value(static_cast<double>(handshakes), MetricType::Gauge)}));
  families.push_back(Family("coapgate_dedup_devices",
                            "exchange memory: device records in use, per shard", MetricType::Gauge,
                            std::move(dedup_devices)));
  families.push_back(Family("coapgate_dedup_devices_capacity",
                            "exchange memory: device records per shard (coap.dedup_devices)",
                            MetricType::Gauge, std::move(dedup_devices_capacity)));
  families.push_back(Family("coapgate_dedup_exchanges",
                            "exchange memory: exchanges remembered (pending or answered), per shard",
                            MetricType::Gauge, std::move(dedup_exchanges)));
  families.push_back(Family("coapgate_dedup_exchanges_capacity",
                            "exchange memory: records x coap.dedup_per_device, per shard",
                            MetricType::Gauge, std::move(dedup_exchanges_capacity)));
  families.push_back(Family("coapgate_dedup_horizon_seconds",
                            "age of the youngest exchange evicted early (any cause) in the last "
                            "1-2 minutes; the exchange lifetime when none was, per shard",
                            MetricType::Gauge, std::move(horizon)));
  families.push_back(Family("coapgate_dedup_horizon_table_bound_seconds",
                            "as coapgate_dedup_horizon_seconds, evictions for table space only: "
                            "below the exchange lifetime, the table is too small for the fleet",
                            MetricType::Gauge, std::move(table_bound_horizon)));
  {
    MetricFamily family{"coapgate_request_duration_seconds",
                        "time from a request's datagram to its answer being sent, one "
                        "observation per reply in coapgate_replies_total",
                        MetricType::Histogram, {Histogram(durations)}};
    families.push_back(std::move(family));
  }
  families.push_back(Family("coapgate_inflight_messages",
                            "messages accepted and not yet answered or settled, per shard",
                            MetricType::Gauge, std::move(inflight)));
  families.push_back(Family("coapgate_devices", "devices in the registry snapshot in force",
                            MetricType::Gauge,
                            {Value(static_cast<double>(registry_->current()->size()),
                                   MetricType::Gauge)}));
  families.push_back(Family("coapgate_registry_generation",
                            "device registry snapshots installed: 1 at start, one more per reload",
                            MetricType::Gauge,
                            {Value(static_cast<double>(registry_->generation()),
                                   MetricType::Gauge)}));
  families.push_back(Family(
      "coapgate_registry_load_timestamp_seconds",
      "Unix time the device registry snapshot in force finished loading", MetricType::Gauge,
      {Value(static_cast<double>(registry_loaded_ms_.load(std::memory_order_relaxed)) / 1000.0,
             MetricType::Gauge)}));
  families.push_back(Family(
      "coapgate_registry_load_duration_seconds",
      "how long loading the device registry snapshot in force took (reading its source)",
      MetricType::Gauge,
      {Value(static_cast<double>(registry_load_us_.load(std::memory_order_relaxed)) / 1e6,
             MetricType::Gauge)}));
  families.push_back(Family("coapgate_registry_reloads", "successful SIGHUP reloads of the devices",
                            MetricType::Counter,
                            {Value(static_cast<double>(reloads_.load(std::memory_order_relaxed)),
                                   MetricType::Counter)}));
  families.push_back(Family("coapgate_registry_reloads_refused",
                            "reloads refused because they would remove more than "
                            "devices.reload_max_removed_percent of the devices",
                            MetricType::Counter,
                            {Value(static_cast<double>(
                                       reloads_refused_.load(std::memory_order_relaxed)),
                                   MetricType::Counter)}));
  // Planned restarts: what the start restored from restart.state_file, and what it refused.
  {
    auto restart_counter = [](const std::atomic<uint64_t>& v, std::vector<ClientMetric::Label> labels = {}) {
      return Value(static_cast<double>(v.load(std::memory_order_relaxed)), MetricType::Counter,
                   std::move(labels));
    };
    const std::pair<const char*, const std::atomic<uint64_t>*> counted[] = {
        {"coapgate_restart_sessions_restored",
         &restart_.sessions_restored},
        {"coapgate_restart_sessions_skipped", &restart_.sessions_skipped},
        {"coapgate_restart_exchanges_restored", &restart_.exchanges_restored},
        {"coapgate_restart_exchanges_skipped", &restart_.exchanges_skipped},
    };
    const char* helps[] = {
        "DTLS sessions restored from the restart state at start",
        "DTLS sessions in the restart state not restored (table full, duplicate peer, state "
        "wolfSSL refused)",
        "answered exchanges restored from the restart state at start",
        "answered exchanges in the restart state not restored (exchange memory full, or their "
        "DTLS session did not come back)",
    };
    for (size_t i = 0; i < std::size(counted); ++i) {
      families.push_back(Family(counted[i].first, helps[i], MetricType::Counter,
                                {restart_counter(*counted[i].second)}));
    }
    std::vector<ClientMetric> refused;
    for (size_t i = 0; i < kStateRefusalCount; ++i) {
      refused.push_back(restart_counter(restart_.refused[i],
                                {{"reason", std::string(ToString(static_cast<StateRefusal>(i)))}}));
    }
    families.push_back(Family("coapgate_restart_state_refused",
                              "restart state files refused at start, by reason",
                              MetricType::Counter, std::move(refused)));
    families.push_back(Family(
        "coapgate_restart_load_seconds", "time the start took to read and restore the restart state",
        MetricType::Gauge,
        {Value(static_cast<double>(restart_.load_us.load(std::memory_order_relaxed)) / 1e6,
               MetricType::Gauge)}));
  }
  // The LIFECYCLE events (backend = "postgres"; zero otherwise, so the family is always there).
  {
    const FirstRegistration::Counts c =
        first_registration_ ? first_registration_->counts() : FirstRegistration::Counts{};
    std::vector<ClientMetric> outcomes;
    for (const auto& [outcome, n] :
         {std::pair{"emitted", c.emitted}, {"already_registered", c.already_registered},
          {"failed", c.failed}, {"dropped", c.dropped}}) {
      outcomes.push_back(
          Value(static_cast<double>(n), MetricType::Counter, {{"outcome", outcome}}));
    }
    families.push_back(Family("coapgate_first_registrations",
                              "devices' first interactions this node asked the database about, "
                              "by outcome",
                              MetricType::Counter, std::move(outcomes)));
  }
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
  families.push_back(Family("coapgate_sink_messages",
                            "messages offered to each sink, by outcome (delivered = acknowledged)",
                            MetricType::Counter, std::move(sink_messages)));
  families.push_back(Family("coapgate_sink_failures",
                            "messages refused or failed by each sink, by cause",
                            MetricType::Counter, std::move(sink_failures)));
  families.push_back(MetricFamily{"coapgate_sink_ack_duration_seconds",
                                  "time from handing a message to a sink to its acknowledgement "
                                  "(PUBACK, Kafka delivery report, the file write), delivered "
                                  "messages, per sink",
                                  MetricType::Histogram, std::move(sink_acked)});
  families.push_back(Family("coapgate_sink_connects", "sink sessions established",
                            MetricType::Counter, std::move(sink_connects)));
  families.push_back(Family("coapgate_sink_disconnects", "sink sessions lost",
                            MetricType::Counter, std::move(sink_disconnects)));
  std::vector<ClientMetric> sinks_up;
  const std::atomic<bool>* flags = publishers_->available_flags();
  for (uint32_t lane = 0; lane < publishers_->lanes(); ++lane) {
    const bool up = flags == nullptr || flags[lane].load(std::memory_order_relaxed);
    sinks_up.push_back(Value(up ? 1 : 0, MetricType::Gauge, {{"lane", std::to_string(lane)}}));
  }
  std::vector<ClientMetric> queued;
  for (uint32_t lane = 0; lane < publishers_->lanes(); ++lane) {
    uint64_t depth = 0;
    for (const auto& shard : shards_) depth += shard->handoff().queued(lane);
    queued.push_back(Value(static_cast<double>(depth), MetricType::Gauge,
                           {{"lane", std::to_string(lane)}}));
  }
  families.push_back(Family("coapgate_publisher_queue_depth",
                            "messages queued for the publisher lane's worker, summed over shards",
                            MetricType::Gauge, std::move(queued)));
  families.push_back(Family("coapgate_sinks_up",
                            "1 while every sink of the publisher lane accepts messages",
                            MetricType::Gauge, std::move(sinks_up)));
  AppendDatabaseFamilies(families);
  families.push_back(Family("coapgate_shards_progressing",
                            "1 while every shard completes loop turns (the watchdog's view)",
                            MetricType::Gauge,
                            {Value(healthy_.load(std::memory_order_relaxed) ? 1 : 0,
                                   MetricType::Gauge)}));
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
  return {true, "ready" + DatabaseState()};
}

std::string Server::DatabaseState() const {
  if (postgres_keys_ == nullptr) return "";
  // The earliest loss among the followers: from then on, something is not followed.
  uint64_t since_ms = 0;
  const std::array<const registry::PostgresChangeFollower*, 2> followers = {
      follower_.get(), &postgres_keys_->follower()};
  for (const registry::PostgresChangeFollower* f : followers) {
    if (f == nullptr || f->connected()) continue;
    const uint64_t down = f->down_since_ms();
    if (down != 0 && (since_ms == 0 || down < since_ms)) since_ms = down;
    if (since_ms == 0) since_ms = started_ms_;
  }
  if (since_ms == 0) return ", database: connected";
  std::array<char, kRfc3339Size> at{};
  const size_t n = FormatRfc3339(since_ms, false, at);
  return ", database: unavailable since " + std::string(at.data(), n) +
         " (serving the registry and keys in memory; GET /bootstrap answers 5.03)";
}

void Server::AppendDatabaseFamilies(std::vector<prometheus::MetricFamily>& families) const {
  // Declared with either backend, so that the exposition's families do not depend on it; the
  // series exist with backend = "postgres" only (a CSV node has no database to be down).
  std::vector<ClientMetric> up, connects, failures, notifications, synced;
  std::vector<ClientMetric> requests, fetched;
  if (postgres_keys_ != nullptr) {
    using Labelled = std::pair<const char*, const registry::PostgresChangeFollower*>;
    for (const auto& [label, f] : {Labelled{"devices", follower_.get()},
                                   Labelled{"bootstrap", &postgres_keys_->follower()}}) {
      if (f == nullptr) continue;
      const std::vector<ClientMetric::Label> labels = {{"follower", label}};
      up.push_back(Value(f->connected() ? 1 : 0, MetricType::Gauge, labels));
      connects.push_back(Value(static_cast<double>(f->connects()), MetricType::Counter, labels));
      failures.push_back(
          Value(static_cast<double>(f->connection_failures()), MetricType::Counter, labels));
      notifications.push_back(
          Value(static_cast<double>(f->notifications()), MetricType::Counter, labels));
      synced.push_back(Value(static_cast<double>(f->synced_ms()) / 1000.0, MetricType::Gauge,
                             labels));
    }
    const registry::KeyFetchQueue& q = postgres_keys_->fetch_queue();
    for (const auto& [outcome, n] : {std::pair{"queued", q.queued()}, {"suppressed", q.suppressed()},
                                     {"queue_full", q.queue_full()}}) {
      requests.push_back(
          Value(static_cast<double>(n), MetricType::Counter, {{"outcome", outcome}}));
    }
    for (const auto& [result, n] : {std::pair{"found", postgres_keys_->fetched_found()},
                                    {"absent", postgres_keys_->fetched_absent()},
                                    {"failed", postgres_keys_->fetch_failed()}}) {
      fetched.push_back(Value(static_cast<double>(n), MetricType::Counter, {{"result", result}}));
    }
  }
  families.push_back(Family("coapgate_database_up",
                            "1 while the follower holds a live, listening database connection",
                            MetricType::Gauge, std::move(up)));
  families.push_back(Family("coapgate_database_connects",
                            "database connections the follower made (1 at start, +1 per reconnect)",
                            MetricType::Counter, std::move(connects)));
  families.push_back(Family("coapgate_database_connection_failures",
                            "database connections the follower lost or could not make",
                            MetricType::Counter, std::move(failures)));
  families.push_back(Family("coapgate_database_notifications",
                            "NOTIFY messages the follower received",
                            MetricType::Counter, std::move(notifications)));
  families.push_back(Family("coapgate_database_synced_timestamp_seconds",
                            "Unix time the follower last knew itself in step with its table",
                            MetricType::Gauge, std::move(synced)));
  families.push_back(Family("coapgate_key_fetch_requests",
                            "handshakes of registered devices that found no generated key and "
                            "asked for its row, by outcome",
                            MetricType::Counter, std::move(requests)));
  families.push_back(Family("coapgate_key_fetches",
                            "ICCIDs fetched after a missed key, by what the row held",
                            MetricType::Counter, std::move(fetched)));
}

}  // namespace coapgate::engine
