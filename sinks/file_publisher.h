// FilePublisher: the embedded default sink. One thread drains every shard's Handoff, writes
// each message as one TELEMETRY_DATA JSON line (SPEC §5) to stdout or a file, in batches, and
// completes the batch back to the shards once write(2) has taken all of it.
//
// "Accepted" for this sink means the kernel has the bytes (write returned); a write error
// rejects the whole batch, so those devices get 5.03 and retry. No fsync: a host crash can
// lose what the page cache held, which is the documented durability of this sink.
//
// A pipe, terminal or socket whose reader stalls must not hang the process: writes to
// anything but a regular file wait with poll(2) and go in pieces the kernel can take at once,
// so Stop can give up on a stalled reader at its deadline.
//
// Thread contract: Start/Stop/wake_fd from the control thread; the publisher thread is the
// single consumer of each Handoff's outbound queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "codec/result.h"
#include "sinks/handoff.h"

namespace coapgate::sinks {

class FilePublisher {
 public:
  // `path` "-" is stdout; otherwise the file is created or appended to. Errors name the path.
  static Result<std::unique_ptr<FilePublisher>, std::string> Open(const std::string& path);
  ~FilePublisher();

  // REQUIRES: not started. The handoffs outlive the publisher.
  void Start(std::vector<Handoff*> shards);
  // Publishes everything still queued, then joins the thread. Call after the shards stopped.
  // If the output does not take it within `timeout_ms` (a stalled pipe reader), the rest is
  // rejected (its devices never got 2.04 in ack=sink mode) and Stop returns false.
  bool Stop(uint32_t timeout_ms = 5000);
  // Shards write 1 here after pushing to their outbound queue.
  [[nodiscard]] int wake_fd() const noexcept { return wake_fd_; }

  [[nodiscard]] uint64_t written() const noexcept { return written_.load(std::memory_order_relaxed); }
  [[nodiscard]] uint64_t write_errors() const noexcept {
    return write_errors_.load(std::memory_order_relaxed);
  }

 private:
  FilePublisher(int fd, bool owns_fd, std::string path);
  void Run();
  // Drains up to one batch from every shard; returns false when there was nothing to do.
  bool PublishBatch();
  bool WriteAll() noexcept;
  bool WriteSome(size_t offset, size_t* written) noexcept;

  int fd_;
  bool owns_fd_;
  bool regular_file_ = false;
  std::string path_;
  int wake_fd_ = -1;
  std::vector<Handoff*> shards_;
  std::vector<char> buffer_;
  size_t used_ = 0;
  struct Pending {
    Handoff* shard;
    uint32_t slot;
  };
  std::vector<Pending> batch_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> abandon_{false};  ///< Stop's deadline passed: reject instead of waiting
  std::atomic<bool> finished_{false};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::thread thread_;
};

}  // namespace coapgate::sinks
