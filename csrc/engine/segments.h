// Reading the concatenation of feature segments without building it in the autograd graph.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mmfast::cpu {

// The segments as one [rows, sum(D_i)] matrix. A single segment is returned as a view of the
// input; several are gathered into a per-thread scratch buffer that is reused by the next call,
// so the result is only valid until then and must never be returned or saved.
at::Tensor gather_segments(at::TensorList inputs, int64_t rows, int64_t in_features);

// The segments as one float32 [rows, sum(D_i)] matrix (converted while gathered), in the per-thread
// scratch slot kFloatGather, with the same lifetime rule as gather_segments.
at::Tensor gather_segments_float32(at::TensorList inputs, int64_t rows, int64_t in_features);

// Per-thread scratch buffers that autograd never sees, reused across calls (so a training loop
// does not page-fault fresh memory each step). Slot 0 is gather_segments'; a caller owns the
// buffer of its slot until its next call with the same slot.
enum class ScratchSlot : int { kGather = 0, kScaledInputs = 1, kFloatGather = 2 };
at::Tensor scratch_buffer(ScratchSlot slot, int64_t numel, const at::TensorOptions& options);

// Bytes the scratch buffers of every thread hold now (each buffer the size of the largest request
// its slot has had: for the gather, the largest concatenation any fused layer ran).
int64_t scratch_bytes();

// Frees every thread's scratch buffers (a buffer an op is using right now is freed when that op
// is done with it); the next call allocates afresh. Returns the bytes released.
int64_t release_scratch_buffers();

}  // namespace mmfast::cpu
