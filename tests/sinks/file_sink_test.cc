#include "sinks/file_sink.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

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
    EXPECT_EQ(sink.counters().Get(SinkFailure::kIoError), 2u);
  }
  dup2(saved, STDOUT_FILENO);
  close(saved);
  close(fds[1]);
  EXPECT_EQ(recorder.settled, (std::vector<std::pair<uint64_t, bool>>{{3, false}, {4, false}}));
  EXPECT_EQ((*output)->write_errors(), 1u);
}

}  // namespace
}  // namespace coapgate::sinks

namespace coapgate::sinks {
namespace {

// A disk that fills up mid-batch (RLIMIT_FSIZE stands in for ENOSPC): the batch fails, and the
// part of it that did get written is taken back, so the next batch does not continue a half
// line (whose devices got 2.04 — consumers must be able to parse it).
TEST(FileOutput, AFailedBatchLeavesNoHalfLine) {
  const std::string path = testing::TempDir() + "/file-output-full.jsonl";
  std::remove(path.c_str());
  auto output = FileOutput::Open(path);
  ASSERT_TRUE(output);
  signal(SIGXFSZ, SIG_IGN);
  rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 100;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string line(59, 'x');
  const std::string batch = line + "\n" + line + "\n" + line + "\n";
  const bool written = (*output)->Write(batch);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  EXPECT_FALSE(written);
  EXPECT_TRUE((*output)->Write(std::string_view("{\"ok\":1}\n")));
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "{\"ok\":1}\n");
}

TEST(FileOutput, CheckWritableCreatesNothing) {
  const std::string path = testing::TempDir() + "/file-output-check/none.jsonl";
  EXPECT_NE(FileOutput::CheckWritable(path), std::nullopt) << "no such directory";
  const std::string fresh = testing::TempDir() + "/file-output-check-fresh.jsonl";
  std::remove(fresh.c_str());
  EXPECT_EQ(FileOutput::CheckWritable(fresh), std::nullopt);
  EXPECT_NE(access(fresh.c_str(), F_OK), 0) << "CheckWritable created the file";
  EXPECT_EQ(FileOutput::CheckWritable("-"), std::nullopt);
}

}  // namespace
}  // namespace coapgate::sinks
