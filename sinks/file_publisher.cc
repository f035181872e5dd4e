#include "sinks/file_publisher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "sinks/envelope.h"

namespace coapgate::sinks {
namespace {

// Messages taken per shard per pass: bounds the latency one busy shard adds to the others'.
constexpr size_t kBatchPerShard = 512;
constexpr size_t kBufferBytes = 1 << 20;
constexpr int kPollMs = 100;          ///< how often a stalled write checks for abandonment
constexpr size_t kPipeChunk = 4096;   ///< one pipe page: accepted whole once POLLOUT is set

size_t FormatIp(const std::array<uint8_t, 16>& ip, char* out) noexcept {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  const bool v4 = std::memcmp(ip.data(), kMapped, 12) == 0;
  const char* ok = v4 ? inet_ntop(AF_INET, ip.data() + 12, out, INET_ADDRSTRLEN)
                      : inet_ntop(AF_INET6, ip.data(), out, INET6_ADDRSTRLEN);
  return ok == nullptr ? 0 : std::strlen(out);
}

}  // namespace

Result<std::unique_ptr<FilePublisher>, std::string> FilePublisher::Open(const std::string& path) {
  if (path == "-") {
    return std::unique_ptr<FilePublisher>(new FilePublisher(STDOUT_FILENO, false, path));
  }
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Fail(path + ": cannot open for writing: " + std::strerror(errno));
  return std::unique_ptr<FilePublisher>(new FilePublisher(fd, true, path));
}

FilePublisher::FilePublisher(int fd, bool owns_fd, std::string path)
    : fd_(fd), owns_fd_(owns_fd), path_(std::move(path)), buffer_(kBufferBytes) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct stat st;
  regular_file_ = fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
}

FilePublisher::~FilePublisher() {
  Stop();
  if (owns_fd_) close(fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void FilePublisher::Start(std::vector<Handoff*> shards,
                          const SnapshotHolder<TemplateSet>* templates,
                          bool reject_untranslatable) {
  shards_ = std::move(shards);
  templates_holder_ = templates;
  reject_untranslatable_ = reject_untranslatable;
  batch_.reserve(kBatchPerShard * shards_.size());
  thread_ = std::thread([this] { Run(); });
}

bool FilePublisher::Stop(uint32_t timeout_ms) {
  if (!thread_.joinable()) return true;
  stop_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!finished_.load(std::memory_order_acquire) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const bool clean = finished_.load(std::memory_order_acquire);
  abandon_.store(true, std::memory_order_release);
  thread_.join();  // prompt: a write waits at most one poll interval once abandoned
  return clean;
}

void FilePublisher::Run() {
  while (true) {
    const bool stopping = stop_.load(std::memory_order_acquire);
    if (PublishBatch()) continue;
    if (stopping) {  // stop was requested before this empty pass: nothing is left
      finished_.store(true, std::memory_order_release);
      return;
    }
    pollfd p{wake_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      uint64_t ignored;
      [[maybe_unused]] const ssize_t n = read(wake_fd_, &ignored, sizeof(ignored));
    }
  }
}

bool FilePublisher::Translate(const InflightMessage& m) {
  json_size_ = 0;
  error_size_ = 0;
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
    return true;
  }
  error_size_ = energysaver::FormatError(json.error(), error_);
  return false;
}

bool FilePublisher::PublishBatch() {
  batch_.clear();
  used_ = 0;
  if (templates_holder_ != nullptr) {
    const std::shared_ptr<const TemplateSet> before = templates_;
    templates_holder_->Refresh(&templates_generation_, &templates_);
    if (templates_ != before) translators_.clear();  // they hold the old programs
  }
  for (Handoff* shard : shards_) {
    uint32_t slot;
    for (size_t i = 0; i < kBatchPerShard && shard->PopOutbound(&slot); ++i) {
      const InflightMessage& m = shard->published(slot);
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
      const size_t need = (translated ? MaxEnvelopeSize(f) : MaxErrorEnvelopeSize(f, error)) + 1;
      if (buffer_.size() - used_ < need && !WriteAll()) {
        // Everything batched so far was rejected by WriteAll; continue with an empty buffer.
      }
      if (buffer_.size() < need) buffer_.resize(need);  // only for payloads beyond 64 KiB
      const std::span<char> room = std::span(buffer_).subspan(used_);
      used_ += translated ? FormatTelemetryEnvelope(f, room) : FormatErrorEnvelope(f, error, room);
      buffer_[used_++] = '\n';
      batch_.push_back({shard, slot, !translated && reject_untranslatable_});
    }
  }
  if (batch_.empty()) return false;
  WriteAll();
  return true;
}

bool FilePublisher::WriteSome(size_t offset, size_t* written) noexcept {
  size_t length = used_ - offset;
  if (!regular_file_) {
    // A pipe, tty or socket may not take everything: wait until it takes something, never
    // forever, and write no more than it is sure to accept without blocking (a pipe that
    // polls writable has at least one free page).
    pollfd p{fd_, POLLOUT, 0};
    while (poll(&p, 1, kPollMs) == 0 || (p.revents & POLLOUT) == 0) {
      if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return false;
      if (abandon_.load(std::memory_order_acquire)) return false;
    }
    if (length > kPipeChunk) {
      // Whole lines only, so that giving up between writes never leaves half a JSON line for
      // the reader; a single line longer than a page still goes in pieces.
      const char* begin = buffer_.data() + offset;
      const void* last_newline = memrchr(begin, '\n', kPipeChunk);
      length = last_newline != nullptr
                   ? static_cast<size_t>(static_cast<const char*>(last_newline) - begin) + 1
                   : kPipeChunk;
    }
  }
  while (true) {
    const ssize_t n = write(fd_, buffer_.data() + offset, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    *written = static_cast<size_t>(n);
    return true;
  }
}

bool FilePublisher::WriteAll() noexcept {
  bool ok = true;
  size_t done = 0;
  while (done < used_) {
    size_t n = 0;
    if (!WriteSome(done, &n)) {
      ok = false;
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    done += n;
  }
  Handoff* last = nullptr;
  for (const Pending& p : batch_) {
    const Outcome outcome = !ok            ? Outcome::kUnavailable
                            : p.bad_payload ? Outcome::kBadPayload
                                            : Outcome::kAccepted;
    p.shard->Complete(p.slot, outcome);
    if (p.shard != last) {
      p.shard->WakeShard();
      last = p.shard;
    }
  }
  if (ok) written_.fetch_add(batch_.size(), std::memory_order_relaxed);
  batch_.clear();
  used_ = 0;
  return ok;
}

}  // namespace coapgate::sinks
