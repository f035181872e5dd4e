// FileOutput: one output file (or stdout) shared by the file sinks of every publisher worker.
//
// "Written" means write(2) took the bytes; there is no fsync, so a host crash can lose what the
// page cache held: that is the documented durability of the file sink.
//
// A pipe, terminal or socket whose reader stalls must not hang the process: writes to anything
// but a regular file wait with poll(2) and go in pieces the kernel takes at once, each piece
// whole lines where possible, so GiveUp can stop a stalled write at the next poll interval
// without leaving half a JSON line to the reader.
//
// Thread contract: Write from any worker thread (serialised by a mutex, so lines of different
// workers never interleave); GiveUp from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "common/rate_limiter.h"
#include "common/result.h"

namespace coapgate::sinks {

class FileOutput {
 public:
  // `path` "-" is stdout; otherwise the file is created or appended to. Errors name the path.
  static Result<std::shared_ptr<FileOutput>, std::string> Open(const std::string& path);
  // Whether Open would succeed, without creating anything: the file is writable, or it does
  // not exist and its directory is. nullopt if so, else the reason naming the path.
  static std::optional<std::string> CheckWritable(const std::string& path);
  ~FileOutput();
  FileOutput(const FileOutput&) = delete;
  FileOutput& operator=(const FileOutput&) = delete;

  // Writes all of `lines` (whole newline-terminated lines) or returns false: a write error, a
  // closed reader, or GiveUp while waiting for a stalled one. After false, some leading lines
  // may have been written; the caller treats the whole batch as not delivered (at-least-once).
  [[nodiscard]] bool Write(std::span<const char> lines) noexcept;

  // Opens the path again and writes there from the next batch on: SIGHUP after logrotate
  // moved the file (no copytruncate needed). Stdout is kept. On failure the old file stays in
  // use and the error names the path. Any thread; waits for a Write in progress.
  [[nodiscard]] Result<void, std::string> Reopen();

  // From now on, Write stops waiting for a stalled reader and fails. Irreversible (shutdown).
  void GiveUp() noexcept { give_up_.store(true, std::memory_order_release); }

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] uint64_t write_errors() const noexcept {
    return write_errors_.load(std::memory_order_relaxed);
  }

 private:
  FileOutput(int fd, bool owns_fd, std::string path);
  // False with *error = the errno, or 0 when the reader went away or GiveUp was called.
  bool WriteSome(std::span<const char> rest, size_t* written, int* error) noexcept;
  // A failed Write reaches the log (a full disk answered 5.03 silently before), at most once
  // per kFailureLogIntervalMs with the number of failures it stands for.
  void ReportFailure(int error) noexcept;
  // After a failed Write: takes back the part of the batch that did get written, so that the
  // next batch does not continue a half line (for a regular file, by truncating; otherwise the
  // next batch starts with a newline, losing only the broken line).
  void DiscardPartial(size_t written) noexcept;

  int fd_;
  bool owns_fd_;
  bool regular_file_ = false;
  std::string path_;
  std::mutex mutex_;
  bool newline_first_ = false;  ///< a half line went out: the next Write starts a new line
  std::atomic<bool> give_up_{false};
  std::atomic<uint64_t> write_errors_{0};
  RateLimiter failure_log_{10'000};
};

}  // namespace coapgate::sinks
