// Counts every global operator new in the process, so tests and benchmarks can assert or
// report "zero allocations". Linking allocation_counter.cc replaces operator new/delete for
// the whole binary: link it only into dedicated test and benchmark executables.
#pragma once

namespace coapgate::test {

// Allocations so far (relaxed atomic; compare two readings on one thread).
[[nodiscard]] long AllocationCount() noexcept;

}  // namespace coapgate::test
