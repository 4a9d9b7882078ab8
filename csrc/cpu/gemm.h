// The CPU GEMMs of mmfast: ATen (MKL / oneDNN as ATen chooses) or oneDNN's matmul with fused
// bias and activation post-ops (PyTorch's `mkldnn::_linear_pointwise`), whichever is faster for
// the shape, measured at first use and remembered.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "activation.h"

namespace mmfast::cpu {

// Which GEMM of which op a tuning decision is for.
enum class GemmSite : int {
  kConcatLinearForward = 0,
  kConcatLinearGradInput = 1,
  kConcatLinearGradWeight = 2,
};

struct TuneKey {
  GemmSite site;
  int64_t m, n, k;
  at::ScalarType dtype;
  int variant;  // site-specific: fused activation, bias present, ...

  bool operator==(const TuneKey& other) const;
};

// Runs the fastest of `candidates` for `key`. Candidate 0 is the ATen path and always valid;
// candidate 1 is the oneDNN path. On the first call for a key each candidate is timed (one that
// throws is skipped); `MMFAST_CPU_GEMM=aten|onednn` forces a choice. Returns what the chosen
// candidate returns.
at::Tensor run_fastest(const TuneKey& key, const std::function<at::Tensor()>& aten_candidate,
                       const std::function<at::Tensor()>& onednn_candidate);

// Whether oneDNN's linear can run `dtype` on this machine and build.
bool onednn_supports(at::ScalarType dtype);

// act(x @ w.T + bias) via oneDNN with the bias and activation fused as post-ops.
// x: [M, K], w: [N, K], any strides.
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                         Activation act);

// act(x @ w.T + bias) via ATen's addmm / mm, with the activation as a vectorized in-place pass.
at::Tensor aten_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                       Activation act);

}  // namespace mmfast::cpu
