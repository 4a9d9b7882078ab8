// The CPU GEMMs of mmfast: ATen (MKL / oneDNN as ATen chooses) or oneDNN's matmul with fused
// bias and activation post-ops (PyTorch's `mkldnn::_linear_pointwise`), whichever is faster for
// the shape, measured at first use of a size class and remembered.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "activation.h"

namespace mmfast::cpu {

// Which GEMM of which op a tuning decision is for, named "<op>.<gemm>" by the op that runs it
// (for example "<op>.forward"): the name keys the decisions and the verbose output.
struct GemmSite {
  const char* name;  // a string literal
};

struct TuneKey {
  GemmSite site;
  int64_t m, n, k;
  at::ScalarType dtype;
  int variant;  // site-specific: fused activation, bias present, ...

  bool operator==(const TuneKey& other) const;
};

// One way to compute a GEMM site's result.
struct GemmCandidate {
  const char* name;  // "aten", "aten_split_k", "onednn", ...
  std::function<at::Tensor()> run;
};

// Runs the fastest of `candidates` for `key`. Candidate 0 must always be valid (the plain ATen
// path). Decisions are shared by a size class (m, n and k exact up to 16, then rounded up to a
// power of two). On the first call for a size class each candidate is timed (one that throws is
// skipped, and oneDNN candidates are skipped for dtypes oneDNN cannot run);
// `MMFAST_CPU_GEMM=<name>` forces a candidate by name where it is offered;
// `MMFAST_CPU_GEMM_VERBOSE=1` prints each choice made with every candidate's best time. Under
// torch.use_deterministic_algorithms(True) candidate 0 always runs: timed choices can differ
// between processes, and the candidates' results differ in rounding.
at::Tensor run_fastest(const TuneKey& key, const std::vector<GemmCandidate>& candidates);

// Whether oneDNN's linear can run `dtype` on this machine and build.
bool onednn_supports(at::ScalarType dtype);

// act(x @ w.T + bias) via oneDNN with the bias and activation fused as post-ops.
// x: [M, K], w: [N, K], any strides.
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                         Activation act);

// Whether `dtype` is bfloat16 or float16: a GEMM of such values can also run in float32 (see
// float32_linear).
bool is_reduced_precision(at::ScalarType dtype);

// act(x @ w.T + bias) computed in float32 from reduced-precision x, w and bias, rounded once to
// x's dtype. Products of bfloat16 (or float16) values are exact in float32, so this is what a
// reduced-precision GEMM accumulating in float32 computes; on CPUs without native bfloat16 dot
// products (no AVX512-BF16 or AMX) MKL and oneDNN emulate those at about a quarter of the float32
// rate, and the conversions cost O(M*K + N*K) against the GEMM's O(M*N*K).
at::Tensor float32_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                          Activation act);

// act(x @ w.T + bias) via ATen's addmm / mm, with the activation as a vectorized in-place pass.
at::Tensor aten_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                       Activation act);

}  // namespace mmfast::cpu
