// Both DatagramIo backends against a real loopback socket: SetReceiving(false) leaves what
// arrives in the socket's kernel queue, where a successor process (engine/takeover_channel.h) reads it.
#include "net/datagram_io.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "net/udp_socket.h"

namespace coapgate::net {
namespace {

constexpr auto kWait = std::chrono::seconds(10);

struct Backend {
  const char* name;
  DatagramIoFactory factory;
};

class DatagramIoTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    auto fd = OpenUdpSocket("127.0.0.1", 0, 1 << 20);
    ASSERT_TRUE(fd.has_value()) << fd.error();
    server_ = *fd;
    client_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(client_, 0);
    to_.sin_family = AF_INET;
    to_.sin_port = htons(LocalPort(server_));
    to_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    DatagramIoOptions options;
    options.sockets = {server_};
    options.buffer_size = 1500;
    auto io = GetParam().factory(options);
    ASSERT_TRUE(io.has_value()) << io.error();
    io_ = std::move(*io);
  }
  void TearDown() override {
    io_.reset();
    if (server_ >= 0) close(server_);
    if (client_ >= 0) close(client_);
  }
  void SendFromClient(const std::string& text) {
    ASSERT_EQ(sendto(client_, text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&to_),
                     sizeof(to_)),
              static_cast<ssize_t>(text.size()));
  }
  // Receives until `count` datagrams came or kWait ran out; their texts in order.
  std::vector<std::string> ReceiveSome(size_t count) {
    std::vector<std::string> texts;
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (texts.size() < count && std::chrono::steady_clock::now() < deadline) {
      for (const ReceivedDatagram& d : io_->Receive(50)) {
        texts.emplace_back(reinterpret_cast<const char*>(d.bytes.data()), d.bytes.size());
      }
    }
    return texts;
  }

  int server_ = -1;
  int client_ = -1;
  sockaddr_in to_{};
  std::unique_ptr<DatagramIo> io_;
};

TEST_P(DatagramIoTest, StoppedReceivingLeavesDatagramsInTheSocketAndResumes) {
  SendFromClient("one");
  EXPECT_EQ(ReceiveSome(1), std::vector<std::string>{"one"});
  EXPECT_FALSE(io_->receive_stopped());

  io_->SetReceiving(false);
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!io_->receive_stopped() && std::chrono::steady_clock::now() < deadline) {
    EXPECT_TRUE(io_->Receive(10).empty());
  }
  ASSERT_TRUE(io_->receive_stopped());
  SendFromClient("two");
  SendFromClient("three");
  for (int turn = 0; turn < 5; ++turn) EXPECT_TRUE(io_->Receive(20).empty());
  // Still queued in the kernel: read straight from the socket, as a successor would.
  char buffer[16];
  const ssize_t n = recv(server_, buffer, sizeof(buffer), MSG_DONTWAIT);
  ASSERT_EQ(n, 3);
  EXPECT_EQ(std::string(buffer, 3), "two");

  io_->SetReceiving(true);
  EXPECT_FALSE(io_->receive_stopped());
  EXPECT_EQ(ReceiveSome(1), std::vector<std::string>{"three"});
  SendFromClient("four");
  EXPECT_EQ(ReceiveSome(1), std::vector<std::string>{"four"});
}

INSTANTIATE_TEST_SUITE_P(Backends, DatagramIoTest,
                         ::testing::Values(Backend{"uring", MakeUringIo},
                                           Backend{"recvmmsg", MakeRecvmmsgIo}),
                         [](const ::testing::TestParamInfo<Backend>& param_info) {
                           return std::string(param_info.param.name);
                         });

}  // namespace
}  // namespace coapgate::net
