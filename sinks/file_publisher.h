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
// With Energy Saver templates (SPEC §8) each message is translated here, on the publisher
// thread, so the shards never pay for it: a translated payload goes out as payload.type JSON;
// one the template cannot translate goes out as an ERROR event carrying the raw payload, and
// its device gets 2.04 (accept) or 4.00 (reject_untranslatable).
//
// Thread contract: Start/Stop/wake_fd from the control thread; the publisher thread is the
// single consumer of each Handoff's outbound queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <array>
#include <vector>

#include "codec/energy_saver/translator.h"
#include "codec/result.h"
#include "sinks/handoff.h"
#include "sinks/snapshot_holder.h"
#include "sinks/template_set.h"

namespace coapgate::sinks {

class FilePublisher {
 public:
  // `path` "-" is stdout; otherwise the file is created or appended to. Errors name the path.
  static Result<std::unique_ptr<FilePublisher>, std::string> Open(const std::string& path);
  ~FilePublisher();

  // REQUIRES: not started. The handoffs and `templates` outlive the publisher; `templates`
  // may be null (no Energy Saver).
  void Start(std::vector<Handoff*> shards, const SnapshotHolder<TemplateSet>* templates,
             bool reject_untranslatable);
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
  // Translates m's payload with its device's template into json_; false with the error text
  // in error_ when the template cannot; true with json_ empty when there is no template.
  bool Translate(const InflightMessage& m);
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
    bool bad_payload;  ///< untranslatable and rejected: 4.00 once written
  };
  const SnapshotHolder<TemplateSet>* templates_holder_ = nullptr;
  std::shared_ptr<const TemplateSet> templates_;
  uint64_t templates_generation_ = 0;
  bool reject_untranslatable_ = false;
  // One Translator per program in use (each holds its scratch); rebuilt after a reload.
  std::unordered_map<const energysaver::Program*, energysaver::Translator> translators_;
  std::vector<char> json_;  ///< the current message's translation
  size_t json_size_ = 0;
  std::array<char, 512> error_{};  ///< the current message's translation error text
  size_t error_size_ = 0;
  std::vector<Pending> batch_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> abandon_{false};  ///< Stop's deadline passed: reject instead of waiting
  std::atomic<bool> finished_{false};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::thread thread_;
};

}  // namespace coapgate::sinks
