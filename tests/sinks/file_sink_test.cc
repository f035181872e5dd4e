#include "sinks/file_sink.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace coapgate::sinks {
namespace {

struct Recorder final : Settlement {
  void Settle(uint64_t ticket, bool delivered) noexcept override {
    settled.emplace_back(ticket, delivered);
  }
  std::vector<std::pair<uint64_t, bool>> settled;
};

Event EventWith(std::string_view envelope) {
  Event e;
  e.envelope = envelope;
  return e;
}

TEST(FileSink, FlushWritesWholeLinesAndSettlesTheBatch) {
  const std::string path = testing::TempDir() + "/file-sink-test.jsonl";
  std::remove(path.c_str());
  auto output = FileOutput::Open(path);
  ASSERT_TRUE(output) << output.error();
  Recorder recorder;
  FileSink sink(*output, &recorder);
  EXPECT_EQ(sink.label(), "file:" + path);
  ASSERT_TRUE(sink.Publish(EventWith(R"({"a":1})"), 7));
  ASSERT_TRUE(sink.Publish(EventWith(R"({"b":2})"), 9));
  EXPECT_TRUE(recorder.settled.empty()) << "settled before the write";
  EXPECT_EQ(sink.outstanding(), 2u);
  sink.Flush();
  EXPECT_EQ(recorder.settled, (std::vector<std::pair<uint64_t, bool>>{{7, true}, {9, true}}));
  EXPECT_EQ(sink.outstanding(), 0u);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "{\"a\":1}\n{\"b\":2}\n");
  EXPECT_EQ(sink.counters().delivered.load(), 2u);
}

TEST(FileSink, ALargeEventFlushesTheBatchFirstAndStillFits) {
  const std::string path = testing::TempDir() + "/file-sink-large.jsonl";
  std::remove(path.c_str());
  auto output = FileOutput::Open(path);
  ASSERT_TRUE(output);
  Recorder recorder;
  FileSink sink(*output, &recorder);
  const std::string big(3 << 20, 'x');  // beyond the 1 MiB batch buffer
  ASSERT_TRUE(sink.Publish(EventWith("small"), 1));
  ASSERT_TRUE(sink.Publish(EventWith(big), 2));
  sink.Flush();
  ASSERT_EQ(recorder.settled.size(), 2u);
  EXPECT_TRUE(recorder.settled[0].second && recorder.settled[1].second);
  std::ifstream in(path, std::ios::ate);
  EXPECT_EQ(static_cast<size_t>(in.tellg()), 6 + big.size() + 1);
}

TEST(FileSink, AWriteErrorFailsTheWholeBatch) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  close(fds[0]);  // no reader: EPIPE (SIGPIPE is ignored below)
  signal(SIGPIPE, SIG_IGN);
  const int saved = dup(STDOUT_FILENO);
  ASSERT_GE(dup2(fds[1], STDOUT_FILENO), 0);
  auto output = FileOutput::Open("-");
  ASSERT_TRUE(output);
  Recorder recorder;
  {
    FileSink sink(*output, &recorder);
    ASSERT_TRUE(sink.Publish(EventWith("{}"), 3));
    ASSERT_TRUE(sink.Publish(EventWith("{}"), 4));
    sink.Flush();
    EXPECT_EQ(sink.counters().failed.load(), 2u);
  }
  dup2(saved, STDOUT_FILENO);
  close(saved);
  close(fds[1]);
  EXPECT_EQ(recorder.settled, (std::vector<std::pair<uint64_t, bool>>{{3, false}, {4, false}}));
  EXPECT_EQ((*output)->write_errors(), 1u);
}

}  // namespace
}  // namespace coapgate::sinks
