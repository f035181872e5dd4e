#include "sinks/file_output.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace coapgate::sinks {
namespace {

constexpr int kPollMs = 100;         ///< how often a stalled write checks GiveUp
constexpr size_t kPipeChunk = 4096;  ///< one pipe page: accepted whole once POLLOUT is set

}  // namespace

Result<std::shared_ptr<FileOutput>, std::string> FileOutput::Open(const std::string& path) {
  if (path == "-") return std::shared_ptr<FileOutput>(new FileOutput(STDOUT_FILENO, false, path));
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Fail(path + ": cannot open for writing: " + std::strerror(errno));
  return std::shared_ptr<FileOutput>(new FileOutput(fd, true, path));
}

FileOutput::FileOutput(int fd, bool owns_fd, std::string path)
    : fd_(fd), owns_fd_(owns_fd), path_(std::move(path)) {
  struct stat st;
  regular_file_ = fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
}

Result<void, std::string> FileOutput::Reopen() {
  if (!owns_fd_) return {};
  const int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Fail(path_ + ": cannot reopen for writing: " + std::strerror(errno));
  std::lock_guard lock(mutex_);
  close(fd_);
  fd_ = fd;
  struct stat st;
  regular_file_ = fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  newline_first_ = false;  // a new file starts on a line boundary
  return {};
}

FileOutput::~FileOutput() {
  if (owns_fd_) close(fd_);
}

bool FileOutput::WriteSome(std::span<const char> rest, size_t* written, int* error) noexcept {
  *error = 0;
  size_t length = rest.size();
  if (!regular_file_) {
    // Wait until the reader takes something, never forever, and write no more than it is
    // sure to accept without blocking (a pipe that polls writable has a free page).
    pollfd p{fd_, POLLOUT, 0};
    while (poll(&p, 1, kPollMs) == 0 || (p.revents & POLLOUT) == 0) {
      if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return false;
      if (give_up_.load(std::memory_order_acquire)) return false;
    }
    if (length > kPipeChunk) {
      // Whole lines only, so giving up between writes never leaves half a JSON line; a single
      // line longer than a page still goes in pieces.
      const void* last_newline = memrchr(rest.data(), '\n', kPipeChunk);
      length = last_newline != nullptr
                   ? static_cast<size_t>(static_cast<const char*>(last_newline) - rest.data()) + 1
                   : kPipeChunk;
    }
  }
  while (true) {
    const ssize_t n = write(fd_, rest.data(), length);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) *error = errno;
    if (n <= 0) return false;
    *written = static_cast<size_t>(n);
    return true;
  }
}

bool FileOutput::Write(std::span<const char> lines) noexcept {
  std::lock_guard lock(mutex_);
  if (newline_first_) {
    size_t n = 0;
    static constexpr char kNewline[] = {'\n'};
    int error = 0;
    if (!WriteSome(kNewline, &n, &error)) {
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      ReportFailure(error);
      return false;
    }
    newline_first_ = false;
  }
  size_t done = 0;
  while (done < lines.size()) {
    size_t n = 0;
    int error = 0;
    if (!WriteSome(lines.subspan(done), &n, &error)) {
      write_errors_.fetch_add(1, std::memory_order_relaxed);
      ReportFailure(error);
      DiscardPartial(done);
      return false;
    }
    done += n;
  }
  return true;
}

void FileOutput::ReportFailure(int error) noexcept {
  if (give_up_.load(std::memory_order_acquire)) return;  // shutdown reports its own outcome
  uint64_t suppressed = 0;
  if (!failure_log_.Allow(&suppressed)) return;
  const char* cause = error != 0 ? std::strerror(error) : "the reader closed the output";
  spdlog::error("file sink {}: write failed: {} (devices get 5.03){}", path_, cause,
                suppressed == 0 ? std::string()
                                : " [" + std::to_string(suppressed) + " more since the last report]");
}

void FileOutput::DiscardPartial(size_t written) noexcept {
  if (written == 0) return;
  if (regular_file_) {
    // O_APPEND and the mutex: nobody else wrote after us, so the batch is the file's tail.
    const off_t end = lseek(fd_, 0, SEEK_END);
    if (end >= static_cast<off_t>(written) &&
        ftruncate(fd_, end - static_cast<off_t>(written)) == 0) {
      return;
    }
  }
  newline_first_ = true;
}

std::optional<std::string> FileOutput::CheckWritable(const std::string& path) {
  if (path == "-") return std::nullopt;
  if (access(path.c_str(), F_OK) == 0) {
    if (access(path.c_str(), W_OK) == 0) return std::nullopt;
    return path + ": cannot open for writing: " + std::strerror(errno);
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (access(dir.c_str(), W_OK | X_OK) == 0) return std::nullopt;
  return path + ": cannot open for writing: " + dir + ": " + std::strerror(errno);
}

}  // namespace coapgate::sinks
