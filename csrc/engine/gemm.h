// The CPU GEMMs of mmfast: ATen (MKL / oneDNN as ATen chooses) or oneDNN's matmul with fused
// bias and activation post-ops (PyTorch's `mkldnn::_linear_pointwise`), whichever is faster for
// the shape, measured at first use of a size class and remembered. The tuner's state (a forced
// engine, the choices made) is read and set in-process through `mmfast._C` (csrc/module.cpp) and
// `mmfast.ops.cpu_gemm`.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
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

// The name of every engine any GEMM site offers, the one list of them: sites name their candidates
// from it (run_fastest asserts so), MMFAST_CPU_GEMM and force_gemm_engine accept only these, and
// `mmfast._C.cpu_gemm_engines()` exports it.
//   aten              ATen's mm / addmm on the (gathered) inputs, activation as a separate pass
//   aten_split_k      one ATen GEMM per input segment accumulating into the output (no gather)
//   aten_gathered     one ATen GEMM over the gathered inputs where the default is one per segment
//   aten_cat_weights  one ATen GEMM over concatenated weights (a fusion's per-modality projections)
//   aten_float32      ATen in float32 from bfloat16 / float16 operands, rounded once
//   segment_gemv      mmfast's own pass over the weight for a few rows (segment_gemv.h)
//   onednn            oneDNN's matmul with fused bias and activation post-ops
//   concurrent        a backward's two independent GEMMs at once, one per thread, each single-threaded
inline constexpr std::array<const char*, 8> kGemmEngineNames = {
    "aten",         "aten_split_k", "aten_gathered", "aten_cat_weights", "aten_float32",
    "segment_gemv", "onednn",       "concurrent"};

// Whether `name` is one of kGemmEngineNames.
bool is_gemm_engine(const std::string& name);

// One way to compute a GEMM site's result.
struct GemmCandidate {
  const char* name;  // one of kGemmEngineNames
  std::function<at::Tensor()> run;
};

// Runs the fastest of `candidates` for `key`. Candidate 0 must always be valid (the plain ATen
// path). Decisions are shared by a size class (m, n and k exact up to 16, then rounded up to a
// power of two). On the first call for a size class each candidate is timed (one that throws is
// skipped, and oneDNN candidates are skipped for dtypes oneDNN cannot run) in interleaved rounds;
// while the fastest two stay within a few per cent of each other more rounds decide, and a tie
// that remains goes to the earliest candidate (ATen first), so that one machine makes the same
// choice run to run. A forced engine (force_gemm_engine, or `MMFAST_CPU_GEMM=<name>` read at the
// first GEMM) runs wherever the site offers it, candidate 0 elsewhere, untimed and unrecorded; an
// unknown MMFAST_CPU_GEMM value makes every call raise (a ValueError naming the valid ones) until
// force_gemm_engine sets the state. `MMFAST_CPU_GEMM_VERBOSE=1` prints each choice made with
// every candidate's best time. Under torch.use_deterministic_algorithms(True) candidate 0 always
// runs: timed choices can differ between processes, and the candidates' results differ in rounding.
at::Tensor run_fastest(const TuneKey& key, const std::vector<GemmCandidate>& candidates);

// The index of the candidate run_fastest would run for `key` (timing them on the first call of a
// size class, as it does), without running it: for sites that time out-of-place candidates and
// then write the chosen engine's result in place (into a view, or accumulating into a tensor),
// which a timed candidate must not do, as it runs several times.
size_t choose_fastest(const TuneKey& key, const std::vector<GemmCandidate>& candidates);

// The engine every GEMM site runs where it offers it ("" for none: the timed choice), as set by
// force_gemm_engine or, before its first call, by MMFAST_CPU_GEMM. Throws c10::ValueError while an
// unknown MMFAST_CPU_GEMM value is in force.
std::string forced_gemm_engine();

// Forces `name` (one of kGemmEngineNames; "" or "auto": none) on every GEMM site, replacing what
// MMFAST_CPU_GEMM asked for (an unknown value included); returns the engine forced before ("" for
// none, or for MMFAST_CPU_GEMM's unknown value). Throws c10::ValueError naming the valid names for
// an unknown `name`, and changes nothing then.
std::string force_gemm_engine(const std::string& name);

// One remembered choice: the size class it is for, the first shape it was timed on, the engine
// chosen and each timed candidate's best time in seconds (in the site's candidate order).
struct GemmChoice {
  TuneKey key;  // size classes in m, n, k
  int64_t m, n, k;  // the shape timed
  std::string engine;
  std::vector<std::pair<std::string, double>> best_seconds;
};

// The choices remembered so far, oldest first.
std::vector<GemmChoice> gemm_choices();

// Forgets every remembered choice: the next call of each size class times its candidates again.
void reset_gemm_choices();

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
