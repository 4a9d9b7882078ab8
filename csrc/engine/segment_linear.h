// GEMMs whose K dimension is a list of feature segments (the never-built concatenation), on the
// fastest CPU engine for the shape. Shared by every op that multiplies cat(inputs) by a weight.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>

#include "activation.h"
#include "engine/gemm.h"

namespace mmfast::cpu {

// act(x @ w.T + bias) for a dense [M, K] x, timed per shape between ATen and oneDNN (and for
// bfloat16 / float16, float32 compute: see float32_linear).
at::Tensor linear_on_fastest_engine(GemmSite site, const at::Tensor& x, const at::Tensor& w,
                                    const std::optional<at::Tensor>& bias, Activation act);

// act(cat(inputs, -1) @ w.T + bias) as a [rows, N] matrix, accumulated over the whole K in float32
// (or float64), on the fastest of: gather + ATen, gather + oneDNN (bias and activation fused), for
// float32/float64 one GEMM per segment accumulating in the output, for bfloat16/float16 float32
// compute, and for up to kMaxSegmentGemvRows rows segment_gemv. `w` must be contiguous.
at::Tensor segments_linear(GemmSite site, at::TensorList inputs, const at::Tensor& w,
                           const std::optional<at::Tensor>& bias, Activation act, int64_t rows,
                           int64_t in_features);

// grad_pre.T @ cat(inputs, -1) as a new [N, K] matrix: ATen writes each segment's column slice in
// place, or one GEMM (ATen, oneDNN, or for bfloat16/float16 float32 compute) runs over the gathered
// segments; the fastest is used.
at::Tensor segments_grad_weight(GemmSite site, const at::Tensor& grad_pre, at::TensorList inputs, int64_t rows,
                                int64_t in_features);

// The GEMM sites of a linear layer's backward over segments.
struct LinearBackwardSites {
  GemmSite grad_input;
  GemmSite grad_weight;
  GemmSite both;  // the choice between running the two in turn or at once
};

// grad_pre @ w ([rows, K], the input gradient) and grad_pre.T @ cat(inputs) ([N, K], the weight
// gradient), each on its fastest engine in turn, or (float32 / float64, small problems, more than
// one thread) the two at once, one per thread, each single-threaded ("concurrent"): for GEMMs of
// a few million multiply-adds, waking and joining the threads inside each GEMM costs as much as the
// arithmetic, so two single-threaded GEMMs side by side finish sooner. Timed like the other sites.
std::pair<at::Tensor, at::Tensor> segments_linear_backward(const LinearBackwardSites& sites, const at::Tensor& grad_pre,
                                                           const at::Tensor& w, at::TensorList inputs, int64_t rows,
                                                           int64_t in_features);

// a @ b for dense matrices. float32 / float64: ATen's mm. bfloat16 / float16: the faster of ATen
// in that dtype and float32 compute (see float32_linear), whose product comes back in float32 so
// that the caller rounds once, where it stores it.
at::Tensor matmul_on_fastest_engine(GemmSite site, const at::Tensor& a, const at::Tensor& b);

// out = a @ b into an existing (possibly strided) matrix, as matmul_on_fastest_engine.
void matmul_into(GemmSite site, const at::Tensor& out, const at::Tensor& a, const at::Tensor& b);

// out += a @ b, as matmul_on_fastest_engine (float32 / float64: one addmm_).
void add_matmul(GemmSite site, const at::Tensor& out, const at::Tensor& a, const at::Tensor& b);

}  // namespace mmfast::cpu
