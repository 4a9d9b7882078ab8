// Products of a few rows with weights split into column segments, in one parallel pass.
//
// At batch 1 a GEMM library call costs several microseconds of fixed work, so one call per
// segment (or a concatenation of the weights to make one call) costs more than the arithmetic.
// This pass reads each weight row once, per output feature, and needs neither.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "engine/cpu_capability.h"

namespace mmfast::cpu {

// Above this many rows the GEMM libraries win: they reuse each weight load across rows.
constexpr int64_t kMaxSegmentGemvRows = 4;

// out[r, n] = sum_m x_segments[m][r, :] . w_segments[m][n, :] (+ bias[n])
//             (+ sum_m coef[r, m] * mixed_biases[m][n]).
// x_segments: M matrices [rows, D_m]; w_segments: M matrices [N, D_m] (column blocks of one weight
// or separate weights); both with unit column stride and any row stride. coef: [rows, M] when
// mixed_biases is not empty. Sums run in float (double for double inputs).
// rows <= kMaxSegmentGemvRows.
at::Tensor segment_gemv(at::TensorList x_segments, at::TensorList w_segments, const std::optional<at::Tensor>& bias,
                        const at::Tensor& coef, at::TensorList mixed_biases);

// segment_gemv's builds, one per CPU capability (segment_gemv_cpu.cpp); the one above runs the active one.
using SegmentGemvFn = at::Tensor(at::TensorList, at::TensorList, const std::optional<at::Tensor>&, const at::Tensor&,
                                 at::TensorList);
extern CpuKernel<SegmentGemvFn> segment_gemv_kernel;

}  // namespace mmfast::cpu
