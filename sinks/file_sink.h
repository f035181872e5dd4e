// FileSink: one worker's view of a FileOutput. Events become JSON lines (docs/downstream.md) in a batch
// buffer; Flush writes the batch with one FileOutput::Write and settles all of its tickets
// with the result. The file is always "available": it refuses nothing, and a write error
// fails the batch (its devices get 5.03 and retry).
//
// Thread contract: the Sink contract (one worker thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sinks/file_output.h"
#include "sinks/sink.h"

namespace coapgate::sinks {

class FileSink final : public Sink {
 public:
  FileSink(std::shared_ptr<FileOutput> output, Settlement* settlement);

  [[nodiscard]] const std::string& label() const noexcept override { return label_; }
  [[nodiscard]] bool Publish(const Event& event, uint64_t ticket) noexcept override;
  void Flush() noexcept override;
  void Service(short revents, uint64_t now_ms) noexcept override;
  [[nodiscard]] size_t outstanding() const noexcept override { return tickets_.size(); }
  [[nodiscard]] bool available() const noexcept override { return true; }
  // Nothing is ever left unsettled after Flush; a stalled write is ended by FileOutput::GiveUp.
  void Abandon() noexcept override { Flush(); }

 private:
  std::shared_ptr<FileOutput> output_;
  Settlement* settlement_;
  std::string label_;
  std::vector<char> buffer_;  ///< whole lines; grows only for an event beyond its size
  size_t used_ = 0;
  std::vector<uint64_t> tickets_;  ///< the lines in buffer_, in order
  uint64_t first_us_ = 0;          ///< when the batch's first line came: for counters_.acked
};

}  // namespace coapgate::sinks
