// The take-over conversation's transport against real Unix and UDP sockets: messages, the
// descriptors that pass with them, the socket file's life, and each refusal.
#include "engine/takeover_channel.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "engine/server.h"
#include "net/udp_socket.h"

namespace coapgate::engine {
namespace {

class TakeoverChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/coapgate-takeover-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    directory_ = pattern;
    path_ = directory_ + "/coapgate.takeover";
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::string directory_;
  std::string path_;
};

TEST_F(TakeoverChannelTest, RequestAndAnswerRoundTrip) {
  TakeoverRequest request{2, {"0.0.0.0:5683", "[::]:5683"}, {"0.0.0.0:5684"}};
  auto parsed = TakeoverRequest::Parse(request.Encode());
  ASSERT_TRUE(parsed) << parsed.error();
  EXPECT_EQ(*parsed, request);
  TakeoverSockets sockets{6, 3, 1, {5683, 5683, 5684}};
  auto answer = TakeoverSockets::Parse(sockets.Encode());
  ASSERT_TRUE(answer) << answer.error();
  EXPECT_EQ(answer->sockets, 6u);
  EXPECT_EQ(answer->locks, 3u);
  EXPECT_EQ(answer->state, 1u);
  EXPECT_EQ(answer->ports, (std::vector<uint16_t>{5683, 5683, 5684}));
}

TEST_F(TakeoverChannelTest, BadTextIsAnErrorNamingWhatIsWrong) {
  auto other = TakeoverRequest::Parse("coapgate-takeover 2\nshards 1\n");
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().find("not a request of this version"), std::string::npos);
  auto no_shards = TakeoverRequest::Parse("coapgate-takeover 1\nlisten coap 1.2.3.4:5\n");
  ASSERT_FALSE(no_shards);
  EXPECT_NE(no_shards.error().find("no shard count"), std::string::npos);
  auto bad_number = TakeoverRequest::Parse("coapgate-takeover 1\nshards two\n");
  ASSERT_FALSE(bad_number);
  EXPECT_NE(bad_number.error().find("bad shards \"two\""), std::string::npos);
  auto unknown = TakeoverRequest::Parse("coapgate-takeover 1\nshards 1\nfrobnicate yes\n");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().find("unknown line"), std::string::npos);
  auto refused = TakeoverSockets::Parse("refused the shard count differs");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), "refused: the shard count differs");
  auto port = TakeoverSockets::Parse("sockets 1\nport 70000\n");
  ASSERT_FALSE(port);
  EXPECT_NE(port.error().find("bad port"), std::string::npos);
}

// The descriptor that arrives is the very socket that was sent: same port, and a datagram
// queued in it before the hand-over is read through the received descriptor.
TEST_F(TakeoverChannelTest, SocketsPassWithTheirQueuedDatagrams) {
  auto listener = TakeoverListener::Listen(path_);
  ASSERT_TRUE(listener) << listener.error();
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto successor = TakeoverChannel::Connect(path_);
  ASSERT_TRUE(successor) << successor.error();
  auto running = (*listener)->Accept();
  ASSERT_TRUE(running) << running.error();
  EXPECT_EQ((*running)->peer_pid(), getpid());

  auto udp = net::OpenUdpSocket("127.0.0.1", 0, 1 << 16);
  ASSERT_TRUE(udp) << udp.error();
  const uint16_t port = net::LocalPort(*udp);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(sendto(client, "queued", 6, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 6);
  close(client);

  ASSERT_TRUE((*successor)->Send(TakeoverRequest{1, {"127.0.0.1:0"}, {}}.Encode()));
  auto request = (*running)->Receive(5000);
  ASSERT_TRUE(request) << request.error();
  EXPECT_TRUE(request->fds.empty());
  ASSERT_TRUE(TakeoverRequest::Parse(request->text));

  const int fds[] = {*udp};
  ASSERT_TRUE((*running)->Send(TakeoverSockets{1, 0, 0, {port}}.Encode(), fds));
  close(*udp);  // the running process's copy; the successor's keeps the socket
  auto answer = (*successor)->Receive(5000);
  ASSERT_TRUE(answer) << answer.error();
  ASSERT_EQ(answer->fds.size(), 1u);
  EXPECT_EQ(net::LocalPort(answer->fds[0]), port);
  char buffer[16];
  EXPECT_EQ(recv(answer->fds[0], buffer, sizeof(buffer), MSG_DONTWAIT), 6);
  EXPECT_EQ(std::string(buffer, 6), "queued");
  close(answer->fds[0]);

  // Giving up is closing: the other end learns it at once.
  successor->reset();
  auto closed = (*running)->Receive(5000);
  ASSERT_FALSE(closed);
  EXPECT_NE(closed.error().find("closed"), std::string::npos) << closed.error();
}

TEST_F(TakeoverChannelTest, NothingToTakeOverNamesThePath) {
  auto channel = TakeoverChannel::Connect(path_);
  ASSERT_FALSE(channel);
  EXPECT_NE(channel.error().find(path_ + ": nothing to take over"), std::string::npos)
      << channel.error();
}

TEST_F(TakeoverChannelTest, SilenceIsATimeoutNotAHang) {
  auto listener = TakeoverListener::Listen(path_);
  ASSERT_TRUE(listener) << listener.error();
  auto successor = TakeoverChannel::Connect(path_);
  ASSERT_TRUE(successor) << successor.error();
  auto answer = (*successor)->Receive(50);
  ASSERT_FALSE(answer);
  EXPECT_NE(answer.error().find("no answer within 50 ms"), std::string::npos) << answer.error();
}

// A live listener keeps its path; a stale socket file (its process gone) is replaced; a
// listener removes the file at exit only if it is still its own (a successor's stays).
TEST_F(TakeoverChannelTest, ListenerKeepsALiveSocketReplacesAStaleOneAndRemovesOnlyItsOwn) {
  auto first = TakeoverListener::Listen(path_);
  ASSERT_TRUE(first) << first.error();
  auto second = TakeoverListener::Listen(path_);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().find("in use by pid " + std::to_string(getpid())), std::string::npos)
      << second.error();
  // The successor's turn: the predecessor's file is gone (it closed its listener first).
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  auto successor = TakeoverListener::Listen(path_);
  ASSERT_TRUE(successor) << successor.error();
  first->reset();
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_TRUE(TakeoverChannel::Connect(path_));
  successor->reset();
  EXPECT_FALSE(std::filesystem::exists(path_));

  // Stale: a socket file nobody listens on any more.
  const int stale = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path_.data(), path_.size());
  ASSERT_EQ(bind(stale, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  close(stale);
  auto replaced = TakeoverListener::Listen(path_);
  ASSERT_TRUE(replaced) << replaced.error();
  EXPECT_TRUE(TakeoverChannel::Connect(path_));
  replaced->reset();

  std::ofstream(path_) << "not a socket";
  auto refused = TakeoverListener::Listen(path_);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("exists and is not a socket"), std::string::npos);
}

TEST_F(TakeoverChannelTest, OverlongPathIsRefused) {
  auto refused = TakeoverListener::Listen("/tmp/" + std::string(200, 'x'));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("Unix socket path must have"), std::string::npos);
}

TEST(TakeoverSocketPath, TheStateFilesNameUnlessConfigured) {
  config::Config config;
  config.devices.state = "/var/lib/coapgate/coapgate-state.db";
  EXPECT_EQ(TakeoverSocketPath(config), "/var/lib/coapgate/coapgate-state.db.takeover");
  config.devices.state = "b.db";  // a second instance beside it has its own
  EXPECT_EQ(TakeoverSocketPath(config), "b.db.takeover");
  config.server.takeover_socket = "/run/coapgate/takeover";
  EXPECT_EQ(TakeoverSocketPath(config), "/run/coapgate/takeover");
}

}  // namespace
}  // namespace coapgate::engine
