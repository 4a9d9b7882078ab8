// Reading the concatenation of feature segments without building it in the autograd graph.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mmfast::cpu {

// The segments as one [rows, sum(D_i)] matrix. A single segment is returned as a view of the
// input; several are gathered into a per-thread scratch buffer that is reused by the next call,
// so the result is only valid until then and must never be returned or saved.
at::Tensor gather_segments(at::TensorList inputs, int64_t rows, int64_t in_features);

}  // namespace mmfast::cpu
