// Products of a few rows with weights split into column segments, in one parallel pass.
//
// At batch 1 a GEMM library call costs several microseconds of fixed work, so one call per
// segment (or a concatenation of the weights to make one call) costs more than the arithmetic.
// This pass reads each weight row once, per output feature, and needs neither.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mmfast::cpu {

// Above this many rows the GEMM libraries win: they reuse each weight load across rows.
constexpr int64_t kMaxSegmentGemvRows = 4;

// out[r, n] = sum_m x[r, cols of segment m] . weights[m][n, :] (+ sum_m coef[r, m] * biases[m][n]).
// x: [rows, sum D_m] with unit column stride; weights: M tensors [N, D_m]; coef: [rows, M] when
// biases is not empty. Sums run in float (double for double inputs). rows <= kMaxSegmentGemvRows.
at::Tensor segment_gemv(const at::Tensor& x, at::TensorList weights, const at::Tensor& coef,
                        at::TensorList biases);

}  // namespace mmfast::cpu
