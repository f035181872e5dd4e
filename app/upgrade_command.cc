#include "app/upgrade_command.h"

#include <iostream>

#include "engine/server.h"
#include "engine/takeover_channel.h"

namespace coapgate::app {
namespace {
// The running process's own bound (its successor's start and the hand-over) plus slack.
constexpr int kUpgradeAnswerTimeoutMs = 150000;
}  // namespace

int Upgrade(const config::Config& config) {
  const std::string path = engine::TakeoverSocketPath(config);
  auto channel = engine::TakeoverChannel::Connect(path);
  if (!channel) {
    std::cerr << "coapgate upgrade: " << channel.error() << "\n";
    return 1;
  }
  const pid_t running = (*channel)->peer_pid();
  if (auto sent = (*channel)->Send("upgrade"); !sent) {
    std::cerr << "coapgate upgrade: " << sent.error() << "\n";
    return 1;
  }
  auto answer = (*channel)->Receive(kUpgradeAnswerTimeoutMs);
  if (!answer) {
    std::cerr << "coapgate upgrade: pid " << running << ": " << answer.error() << "\n";
    return 1;
  }
  for (int fd : answer->fds) ::close(fd);
  if (answer->text.starts_with("upgraded ")) {
    std::cout << "coapgate: pid " << running << " handed over to pid "
              << answer->text.substr(9) << "\n";
    return 0;
  }
  const std::string why =
      answer->text.starts_with("failed ") ? answer->text.substr(7) : answer->text;
  std::cerr << "coapgate upgrade: pid " << running << " serves on: " << why << "\n";
  return 1;
}

}  // namespace coapgate::app
