#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace coapgate {

std::string ErrnoText(int error) {
  return std::error_code(error, std::generic_category()).message();
}

Result<void, Error> WriteFileAtomically(const std::string& path, std::string_view bytes) {
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return FailEnvironment(temporary + ": cannot create: " + ErrnoText(errno));
  // O_CREAT's mode applies to a new file only: a leftover temporary keeps its own.
  if (::fchmod(fd, 0600) != 0) {
    const int error = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    return FailEnvironment(temporary + ": cannot chmod: " + ErrnoText(error));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      return FailEnvironment(temporary + ": cannot write: " + ErrnoText(error));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    return FailEnvironment(temporary + ": cannot sync: " + ErrnoText(error));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    return FailEnvironment(path + ": cannot replace: " + ErrnoText(error));
  }
  return {};
}

}  // namespace coapgate
