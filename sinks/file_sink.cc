#include "sinks/file_sink.h"

#include <algorithm>

#include "common/clock.h"

namespace coapgate::sinks {
namespace {

// A batch big enough that a write(2) carries thousands of lines at full load.
constexpr size_t kBufferBytes = 1 << 20;

}  // namespace

FileSink::FileSink(std::shared_ptr<FileOutput> output, Settlement* settlement)
    : output_(std::move(output)),
      settlement_(settlement),
      label_("file:" + output_->path()),
      buffer_(kBufferBytes) {
  tickets_.reserve(4096);
}

bool FileSink::Publish(const Event& event, uint64_t ticket) noexcept {
  const size_t need = event.envelope.size() + 1;
  if (buffer_.size() - used_ < need) Flush();
  if (buffer_.size() < need) buffer_.resize(need);  // only for events beyond 1 MiB
  std::copy(event.envelope.begin(), event.envelope.end(), buffer_.begin() + used_);
  used_ += event.envelope.size();
  buffer_[used_++] = '\n';
  if (tickets_.empty()) first_us_ = MonotonicUs();
  tickets_.push_back(ticket);
  return true;
}

void FileSink::Flush() noexcept {
  if (tickets_.empty()) return;
  const bool ok = output_->Write(std::span<const char>(buffer_.data(), used_));
  // A failed write is logged by the output (rate-limited, with its errno).
  if (ok) {
    counters_.Add(counters_.delivered, tickets_.size());
    // One observation per line, all at the batch's oldest wait: the bound a line waited.
    counters_.acked.Record(MonotonicUs() - first_us_, tickets_.size());
  } else {
    counters_.Fail(SinkFailure::kIoError, tickets_.size());
  }
  // Cleared before settling: Settle never calls back into this sink, but keep it that way.
  std::vector<uint64_t> done;
  done.swap(tickets_);
  used_ = 0;
  for (uint64_t ticket : done) settlement_->Settle(ticket, ok);
  done.clear();
  tickets_.swap(done);  // keeps the reserved capacity: no allocation per batch
}

void FileSink::Service(short, uint64_t) noexcept {}

}  // namespace coapgate::sinks
