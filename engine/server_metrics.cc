// Server's answers to the admin listener: the Prometheus exposition of every counter the
// SIGUSR1 summary logs, plus gauges, and the health and readiness probes. Runs on the admin
// listener's threads: it reads only atomics and the registry snapshot (whose holder locks),
// and sums each shard's relaxed counters at scrape time, so the data path pays nothing for it.
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <string>
#include <string_view>
#include <vector>

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

  size_t sessions = 0;
  std::vector<ClientMetric> inflight;
  for (const auto& shard : shards_) {
    sessions += shard->dtls_sessions();
    inflight.push_back(Value(shard->pending(), MetricType::Gauge,
                             {{"shard", std::to_string(&shard - shards_.data())}}));
  }
  families.push_back(Family("coapgate_dtls_sessions", "established DTLS sessions",
                            MetricType::Gauge, {Value(static_cast<double>(sessions), MetricType::Gauge)}));
  families.push_back(Family("coapgate_inflight_messages",
                            "messages accepted and not yet answered or settled, per shard",
                            MetricType::Gauge, std::move(inflight)));
  families.push_back(Family("coapgate_devices", "devices in the registry snapshot in force",
                            MetricType::Gauge,
                            {Value(static_cast<double>(registry_->current()->size()),
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
  // Per configured sink, its connections summed: outcomes, sessions, and why messages failed.
  std::vector<ClientMetric> sink_messages, sink_failures, sink_connects, sink_disconnects;
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
  }
  families.push_back(Family("coapgate_sink_messages",
                            "messages offered to each sink, by outcome (delivered = acknowledged)",
                            MetricType::Counter, std::move(sink_messages)));
  families.push_back(Family("coapgate_sink_failures",
                            "messages refused or failed by each sink, by cause",
                            MetricType::Counter, std::move(sink_failures)));
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
  families.push_back(Family("coapgate_sinks_up",
                            "1 while every sink of the publisher lane accepts messages",
                            MetricType::Gauge, std::move(sinks_up)));
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
  return {true, "ready"};
}

}  // namespace coapgate::engine
