#include "sinks/publisher_pool.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "sinks/file_sink.h"
#include "sinks/kafka_sink.h"
#include "sinks/mqtt_sink.h"

namespace coapgate::sinks {
namespace {

// The label without the worker suffix: "mqtt://127.0.0.1:1883#1" -> "mqtt://127.0.0.1:1883".
std::string_view BaseLabel(std::string_view label) {
  const size_t hash = label.rfind('#');
  return hash == std::string_view::npos ? label : label.substr(0, hash);
}

}  // namespace

Result<std::unique_ptr<PublisherPool>, std::string> PublisherPool::Create(
    const std::vector<SinkConfig>& sinks, Mode mode) {
  auto pool = std::unique_ptr<PublisherPool>(new PublisherPool());
  pool->configs_ = sinks;
  int lanes = 1;
  int mqtt_sinks = 0;
  for (const SinkConfig& sink : sinks) {
    if (const auto* mqtt = std::get_if<MqttSinkConfig>(&sink.settings)) {
      lanes = std::max(lanes, mqtt->connections);
      ++mqtt_sinks;
    }
  }
  pool->available_ = std::make_unique<std::atomic<bool>[]>(static_cast<size_t>(lanes));
  std::vector<std::shared_ptr<FileOutput>> files(sinks.size());
  for (size_t i = 0; i < sinks.size(); ++i) {
    if (const auto* file = std::get_if<FileSinkConfig>(&sinks[i].settings)) {
      if (mode == Mode::kCheckOnly) {
        if (std::optional<std::string> error = FileOutput::CheckWritable(file->path)) {
          return Fail("sinks[" + std::to_string(i) + "]: " + *error);
        }
        continue;
      }
      auto output = FileOutput::Open(file->path);
      if (!output) return Fail("sinks[" + std::to_string(i) + "]: " + output.error());
      files[i] = *output;
      pool->files_.push_back(*output);
    }
  }
  for (int lane = 0; lane < lanes; ++lane) {
    pool->available_[static_cast<size_t>(lane)].store(true, std::memory_order_relaxed);
    auto worker = std::make_unique<PublisherWorker>(static_cast<uint32_t>(lane),
                                                    &pool->available_[static_cast<size_t>(lane)]);
    for (size_t i = 0; i < sinks.size(); ++i) {
      const std::string where = "sinks[" + std::to_string(i) + "]: ";
      const auto& settings = sinks[i].settings;
      if (std::holds_alternative<FileSinkConfig>(settings)) {
        if (mode == Mode::kCheckOnly) continue;
        worker->AddSink(std::make_unique<FileSink>(files[i], worker->settlement()));
      } else if (const auto* mqtt = std::get_if<MqttSinkConfig>(&settings)) {
        // Two MQTT sinks must not share client ids (the broker would keep kicking one off).
        const std::string infix = mqtt_sinks > 1 ? "-s" + std::to_string(i) : std::string();
        auto sink = MqttSink::Create(*mqtt, lane, worker->settlement(), infix);
        if (!sink) return Fail(where + sink.error());
        worker->AddSink(std::move(*sink));
      } else if (const auto* kafka = std::get_if<KafkaSinkConfig>(&settings)) {
        auto sink = KafkaSink::Create(*kafka, lane, worker->settlement());
        if (!sink) return Fail(where + sink.error());
        worker->AddSink(std::move(*sink));
      }
    }
    pool->workers_.push_back(std::move(worker));
  }
  return pool;
}

PublisherPool::~PublisherPool() { Stop(0); }

std::vector<int> PublisherPool::wake_fds() const {
  std::vector<int> fds;
  for (const auto& worker : workers_) fds.push_back(worker->wake_fd());
  return fds;
}

void PublisherPool::Start(const std::vector<Handoff*>& shards,
                          const SnapshotHolder<TemplateSet>* templates,
                          bool reject_untranslatable) {
  for (auto& worker : workers_) worker->Start(shards, templates, reject_untranslatable);
}

bool PublisherPool::Stop(uint32_t timeout_ms) {
  for (auto& worker : workers_) worker->RequestStop();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto all_finished = [&] {
    return std::all_of(workers_.begin(), workers_.end(),
                       [](const auto& worker) { return worker->finished(); });
  };
  while (!all_finished() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const bool clean = all_finished();
  if (!clean) {
    for (auto& file : files_) file->GiveUp();  // a worker may be stuck on a stalled reader
    for (auto& worker : workers_) worker->GiveUp();
  }
  for (auto& worker : workers_) worker->Join();
  return clean;
}

std::vector<PublisherPool::SinkTotals> PublisherPool::Totals() const {
  std::vector<SinkTotals> out;
  if (workers_.empty()) return out;
  out.resize(workers_.front()->sinks().size());
  for (size_t i = 0; i < out.size(); ++i) {
    SinkTotals& t = out[i];
    t.label = BaseLabel(workers_.front()->sinks()[i]->label());
    for (const auto& worker : workers_) {
      const SinkCounters& c = worker->sinks()[i]->counters();
      t.delivered += c.delivered.load(std::memory_order_relaxed);
      t.failed += c.failed.load(std::memory_order_relaxed);
      t.refused += c.refused.load(std::memory_order_relaxed);
      t.connects += c.connects.load(std::memory_order_relaxed);
      t.disconnects += c.disconnects.load(std::memory_order_relaxed);
      t.acked.Add(c.acked.Read());
      for (size_t k = 0; k < static_cast<size_t>(SinkFailure::kCount_); ++k) {
        t.causes[k] += c.Get(static_cast<SinkFailure>(k));
      }
    }
  }
  return out;
}

std::string PublisherPool::Summary() const {
  std::string out;
  for (const SinkTotals& t : Totals()) {
    if (!out.empty()) out += " | ";
    out += t.label;
    for (const auto& [name, value] : {std::pair{"delivered", t.delivered}, {"failed", t.failed},
                                      {"refused", t.refused}, {"connects", t.connects},
                                      {"disconnects", t.disconnects}}) {
      if (value != 0) out += std::string(" ") + name + "=" + std::to_string(value);
    }
    for (size_t k = 0; k < static_cast<size_t>(SinkFailure::kCount_); ++k) {
      if (t.causes[k] != 0) {
        out += std::string(" ") + ToString(static_cast<SinkFailure>(k)) + "=" +
               std::to_string(t.causes[k]);
      }
    }
  }
  return out;
}

std::string PublisherPool::Describe() const {
  std::string out;
  if (workers_.empty()) return out;
  for (const auto& sink : workers_.front()->sinks()) {
    if (!out.empty()) out += ", ";
    out += BaseLabel(sink->label());
    if (workers_.size() > 1 && !sink->label().starts_with("file:")) {
      out += " (" + std::to_string(workers_.size()) + " connections)";
    }
  }
  return out;
}

std::vector<std::string> PublisherPool::ReopenFiles() {
  std::vector<std::string> errors;
  for (const auto& file : files_) {
    if (file == nullptr) continue;
    if (auto ok = file->Reopen(); !ok) errors.push_back(ok.error());
  }
  return errors;
}

}  // namespace coapgate::sinks
