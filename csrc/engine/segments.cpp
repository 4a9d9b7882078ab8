#include "engine/segments.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <vector>

namespace mmfast::cpu {
namespace {

constexpr size_t kScratchSlots = 3;

// One thread's buffers. Its owner locks `mutex` on every call (uncontended: tens of nanoseconds);
// release_scratch_buffers() and scratch_bytes() lock it from other threads.
struct ThreadScratch {
  std::mutex mutex;
  std::array<at::Tensor, kScratchSlots> buffers;
};

// Every live thread's buffers (the OpenMP workers' too), so that they can be counted and released
// from any thread. Leaked on purpose: threads' thread_local destructors run after static ones.
struct ScratchRegistry {
  std::mutex mutex;
  std::vector<ThreadScratch*> threads;
};
ScratchRegistry& registry() {
  static auto* instance = new ScratchRegistry();
  return *instance;
}

struct RegisteredScratch {
  ThreadScratch scratch;
  RegisteredScratch() {
    std::lock_guard<std::mutex> lock(registry().mutex);
    registry().threads.push_back(&scratch);
  }
  ~RegisteredScratch() {
    std::lock_guard<std::mutex> lock(registry().mutex);
    auto& threads = registry().threads;
    threads.erase(std::remove(threads.begin(), threads.end(), &scratch), threads.end());
  }
};

ThreadScratch& this_thread_scratch() {
  thread_local RegisteredScratch registered;
  return registered.scratch;
}

// Calls `visit(buffer)` on every defined buffer of every thread; returns the bytes visited.
template <typename Visit>
int64_t for_each_scratch_buffer(Visit visit) {
  int64_t bytes = 0;
  std::lock_guard<std::mutex> lock(registry().mutex);
  for (ThreadScratch* thread : registry().threads) {
    std::lock_guard<std::mutex> own(thread->mutex);
    for (at::Tensor& buffer : thread->buffers) {
      if (buffer.defined()) {
        bytes += static_cast<int64_t>(buffer.storage().nbytes());
        visit(buffer);
      }
    }
  }
  return bytes;
}

}  // namespace

// Grows, never shrinks by itself: a training loop asks for the same size every step.
at::Tensor scratch_buffer(ScratchSlot slot, int64_t numel, const at::TensorOptions& options) {
  ThreadScratch& scratch = this_thread_scratch();
  std::lock_guard<std::mutex> lock(scratch.mutex);
  at::Tensor& buffer = scratch.buffers.at(static_cast<size_t>(slot));
  if (!buffer.defined() || buffer.numel() < numel || buffer.scalar_type() != options.dtype().toScalarType()) {
    buffer = at::empty({numel}, options);
  }
  // The view keeps the storage alive: a buffer released while an op uses it is freed after the op.
  return buffer.narrow(0, 0, numel);
}

int64_t scratch_bytes() {
  return for_each_scratch_buffer([](at::Tensor&) {});
}

int64_t release_scratch_buffers() {
  return for_each_scratch_buffer([](at::Tensor& buffer) { buffer.reset(); });
}

at::Tensor gather_segments(at::TensorList inputs, int64_t rows, int64_t in_features) {
  if (inputs.size() == 1) {
    return inputs[0].reshape({rows, in_features});
  }
  at::Tensor out = scratch_buffer(ScratchSlot::kGather, rows * in_features, inputs[0].options()).view({rows, in_features});
  std::vector<at::Tensor> segments;
  segments.reserve(inputs.size());
  bool rows_are_dense = true;
  for (const auto& x : inputs) {
    segments.push_back(x.reshape({rows, x.size(-1)}));
    rows_are_dense = rows_are_dense && (segments.back().size(1) <= 1 || segments.back().stride(1) == 1);
  }
  if (!rows_are_dense) {
    int64_t offset = 0;
    for (const auto& segment : segments) {
      out.narrow(1, offset, segment.size(1)).copy_(segment);
      offset += segment.size(1);
    }
    return out;
  }
  // One pass over the rows copies every segment, so each output row is written once.
  const int64_t item = out.element_size();
  char* dst = static_cast<char*>(out.data_ptr());
  std::vector<const char*> src;
  std::vector<int64_t> row_stride, row_bytes;
  for (const auto& segment : segments) {
    src.push_back(static_cast<const char*>(segment.const_data_ptr()));
    row_stride.push_back(segment.stride(0) * item);
    row_bytes.push_back(segment.size(1) * item);
  }
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(in_features * item, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      char* row = dst + r * in_features * item;
      for (size_t s = 0; s < src.size(); ++s) {
        std::memcpy(row, src[s] + r * row_stride[s], row_bytes[s]);
        row += row_bytes[s];
      }
    }
  });
  return out;
}

at::Tensor gather_segments_float32(at::TensorList inputs, int64_t rows, int64_t in_features) {
  at::Tensor out = scratch_buffer(ScratchSlot::kFloatGather, rows * in_features, inputs[0].options().dtype(at::kFloat))
                       .view({rows, in_features});
  int64_t offset = 0;
  for (const auto& x : inputs) {
    const int64_t width = x.size(-1);
    out.narrow(1, offset, width).copy_(x.reshape({rows, width}));
    offset += width;
  }
  return out;
}

}  // namespace mmfast::cpu
