// GEMMs whose K dimension is a list of feature segments (the never-built concatenation), on the
// fastest CPU engine for the shape. Shared by every op that multiplies cat(inputs) by a weight.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "activation.h"
#include "cpu/gemm.h"

namespace mmfast::cpu {

// act(x @ w.T + bias) for a dense [M, K] x, timed per shape between ATen and oneDNN.
at::Tensor linear_on_fastest_engine(GemmSite site, const at::Tensor& x, const at::Tensor& w,
                                    const std::optional<at::Tensor>& bias, Activation act);

// act(cat(inputs, -1) @ w.T + bias) as a [rows, N] matrix, accumulated over the whole K in float32
// (or float64), on the fastest of: gather + ATen, gather + oneDNN (bias and activation fused), and
// for float32/float64 one GEMM per segment accumulating in the output. `w` must be contiguous.
at::Tensor segments_linear(GemmSite site, at::TensorList inputs, const at::Tensor& w,
                           const std::optional<at::Tensor>& bias, Activation act, int64_t rows,
                           int64_t in_features);

// grad_pre.T @ cat(inputs, -1) as a new [N, K] matrix: ATen writes each segment's column slice in
// place, oneDNN runs one GEMM over the gathered segments; the faster one is used.
at::Tensor segments_grad_weight(GemmSite site, const at::Tensor& grad_pre, at::TensorList inputs, int64_t rows,
                                int64_t in_features);

}  // namespace mmfast::cpu
