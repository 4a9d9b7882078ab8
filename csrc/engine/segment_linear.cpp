#include "engine/segment_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <vector>

#include "engine/activation_kernels.h"
#include "engine/segment_gemv.h"
#include "engine/segments.h"

namespace mmfast::cpu {
namespace {

// Tuning variants must not collide between segment counts; 64 is above every op's input limit.
constexpr int kMaxSegmentsInKey = 64;

int variant_of(Activation act, bool has_bias) { return static_cast<int>(act) * 2 + static_cast<int>(has_bias); }

// One GEMM per segment accumulating into the output: no gather, but only exact enough where the
// output dtype accumulates (float32, float64).
at::Tensor split_k_linear(at::TensorList inputs, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                          Activation act, int64_t rows) {
  at::Tensor out;
  int64_t offset = 0;
  for (const auto& x : inputs) {
    const int64_t width = x.size(-1);
    if (width == 0) {
      continue;
    }
    const at::Tensor x2d = x.reshape({rows, width});
    const at::Tensor w_slice = w.narrow(1, offset, width);
    if (!out.defined()) {
      out = (bias.has_value() && bias->defined()) ? at::addmm(*bias, x2d, w_slice.t()) : at::mm(x2d, w_slice.t());
    } else {
      out.addmm_(x2d, w_slice.t());
    }
    offset += width;
  }
  if (act != Activation::kNone) {
    activation_forward(out, out, act);
  }
  return out;
}

// A few rows: one pass over the weight reads each input segment in place (no gather) and each
// weight row once.
at::Tensor segment_gemv_linear(at::TensorList inputs, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                               Activation act, int64_t rows) {
  std::vector<at::Tensor> x_segments, w_segments;
  int64_t offset = 0;
  for (const auto& x : inputs) {
    const int64_t width = x.size(-1);
    at::Tensor x2d = x.reshape({rows, width});
    x_segments.push_back(x2d.stride(1) == 1 || width <= 1 ? x2d : x2d.contiguous());
    w_segments.push_back(w.narrow(1, offset, width));
    offset += width;
  }
  at::Tensor out = segment_gemv(x_segments, w_segments, bias, at::Tensor(), {});
  if (act != Activation::kNone) {
    activation_forward(out, out, act);
  }
  return out;
}

// Above this many multiply-adds per GEMM, each GEMM's own threads win over one single-threaded
// GEMM per thread (segments_linear_backward's "concurrent" candidate). The same split of a
// forward's rows between the threads, one single-threaded GEMM each, never won on an AMD EPYC
// Zen 4 (1.1-1.3x slower than ATen's own threads at 8 to 256 rows, 2 x 128 -> 128 and 2 x 256 ->
// 256): ATen's GEMMs already run small problems on one thread.
constexpr int64_t kConcurrentMaxWork = int64_t{1} << 24;

// Whether the "concurrent" engine applies to GEMMs of rows x n x k: float32 / float64 (ATen's GEMMs
// accumulate in the output dtype), a small problem, more than one thread and not already inside a
// parallel region.
bool concurrent_applies(at::ScalarType dtype, int64_t rows, int64_t n, int64_t k) {
  return (dtype == at::kFloat || dtype == at::kDouble) && rows * n * k <= kConcurrentMaxWork &&
         at::get_num_threads() > 1 && !at::in_parallel_region();
}

}  // namespace

at::Tensor linear_on_fastest_engine(GemmSite site, const at::Tensor& x, const at::Tensor& w,
                                    const std::optional<at::Tensor>& bias, Activation act) {
  const bool has_bias = bias.has_value() && bias->defined();
  const TuneKey key{site, x.size(0), w.size(0), x.size(1), x.scalar_type(), variant_of(act, has_bias)};
  std::vector<GemmCandidate> candidates = {{"aten", [&] { return aten_linear(x, w, bias, act); }},
                                           {"onednn", [&] { return onednn_linear(x, w, bias, act); }}};
  if (is_reduced_precision(x.scalar_type())) {
    candidates.push_back({"aten_float32", [&] { return float32_linear(x, w, bias, act); }});
  }
  return run_fastest(key, candidates);
}

at::Tensor segments_linear(GemmSite site, at::TensorList inputs, const at::Tensor& w,
                           const std::optional<at::Tensor>& bias, Activation act, int64_t rows,
                           int64_t in_features) {
  const bool has_bias = bias.has_value() && bias->defined();
  const auto dtype = inputs[0].scalar_type();
  const TuneKey key{site, rows, w.size(0), in_features, dtype,
                    variant_of(act, has_bias) * kMaxSegmentsInKey + static_cast<int>(inputs.size())};
  auto gathered = [&] { return gather_segments(inputs, rows, in_features); };
  std::vector<GemmCandidate> candidates = {
      {"aten", [&] { return aten_linear(gathered(), w, bias, act); }},
      {"onednn", [&] { return onednn_linear(gathered(), w, bias, act); }},
  };
  if (inputs.size() > 1 && (dtype == at::kFloat || dtype == at::kDouble)) {
    candidates.push_back({"aten_split_k", [&] { return split_k_linear(inputs, w, bias, act, rows); }});
  }
  if (rows <= kMaxSegmentGemvRows) {
    candidates.push_back({"segment_gemv", [&] { return segment_gemv_linear(inputs, w, bias, act, rows); }});
  }
  if (is_reduced_precision(dtype)) {
    candidates.push_back({"aten_float32", [&] {
                            return float32_linear(gather_segments_float32(inputs, rows, in_features), w, bias, act)
                                .to(dtype);
                          }});
  }
  return run_fastest(key, candidates);
}

at::Tensor segments_grad_weight(GemmSite site, const at::Tensor& grad_pre, at::TensorList inputs, int64_t rows,
                                int64_t in_features) {
  const int64_t out_features = grad_pre.size(1);
  const auto dtype = grad_pre.scalar_type();
  const TuneKey key{site, rows, out_features, in_features, dtype, static_cast<int>(inputs.size())};
  std::vector<GemmCandidate> candidates = {
      {"aten",
       [&] {
         at::Tensor grad_weight = at::empty({out_features, in_features}, grad_pre.options());
         int64_t offset = 0;
         for (const auto& x : inputs) {
           const int64_t width = x.size(-1);
           at::Tensor slice = grad_weight.narrow(1, offset, width);
           at::mm_out(slice, grad_pre.t(), x.reshape({rows, width}));
           offset += width;
         }
         return grad_weight;
       }},
      // At small sizes one GEMM over the gathered inputs beats one per segment: each GEMM call has
      // a fixed cost of several microseconds.
      {"aten_gathered", [&] { return at::mm(grad_pre.t(), gather_segments(inputs, rows, in_features)); }},
      {"onednn",
       [&] {
         const at::Tensor x = gather_segments(inputs, rows, in_features);
         return onednn_linear(grad_pre.t(), x.t(), std::nullopt, Activation::kNone);
       }},
  };
  if (is_reduced_precision(dtype)) {
    candidates.push_back({"aten_float32", [&] {
                            return at::mm(grad_pre.t().to(at::kFloat),
                                          gather_segments_float32(inputs, rows, in_features))
                                .to(dtype);
                          }});
  }
  return run_fastest(key, candidates);
}

std::pair<at::Tensor, at::Tensor> segments_linear_backward(const LinearBackwardSites& sites, const at::Tensor& grad_pre,
                                                           const at::Tensor& w, at::TensorList inputs, int64_t rows,
                                                           int64_t in_features) {
  const int64_t out_features = grad_pre.size(1);
  const auto dtype = grad_pre.scalar_type();
  at::Tensor grad_input;
  std::vector<GemmCandidate> candidates = {
      {"aten",
       [&] {
         grad_input = linear_on_fastest_engine(sites.grad_input, grad_pre, w.t(), std::nullopt, Activation::kNone);
         return segments_grad_weight(sites.grad_weight, grad_pre, inputs, rows, in_features);
       }},
  };
  if (concurrent_applies(dtype, rows, out_features, in_features)) {
    candidates.push_back({"concurrent", [&] {
                            at::Tensor input_part, weight_part;
                            // Inside a parallel region ATen's GEMMs (MKL, oneDNN) run on the calling thread.
                            // The caller's thread-local state (grad mode, below-autograd dispatch) on
                            // the worker too: a worker starts with grad mode on. Task 0 (the GEMM of
                            // the weight, which may require grad) runs on the calling thread today,
                            // but nothing in parallel_for promises that.
                            const at::ThreadLocalState caller_state;
                            at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
                              at::ThreadLocalStateGuard caller_state_guard(caller_state);
                              for (int64_t task = begin; task < end; ++task) {
                                if (task == 0) {
                                  input_part = at::mm(grad_pre, w);
                                } else {
                                  // gather_segments' scratch buffer is this thread's own.
                                  weight_part = at::mm(grad_pre.t(), gather_segments(inputs, rows, in_features));
                                }
                              }
                            });
                            grad_input = input_part;
                            return weight_part;
                          }});
  }
  const TuneKey key{sites.both, rows, out_features, in_features, dtype, static_cast<int>(inputs.size())};
  at::Tensor grad_weight = run_fastest(key, candidates);
  return {grad_input, grad_weight};
}

namespace {

// a @ b in a's dtype ("aten") or in float32 ("aten_float32"): the candidates of a reduced-precision
// product, timed out of place.
std::vector<GemmCandidate> product_candidates(const at::Tensor& a, const at::Tensor& b) {
  return {{"aten", [&] { return at::mm(a, b); }},
          {"aten_float32", [&] { return at::mm(a.to(at::kFloat), b.to(at::kFloat)); }}};
}

// Whether the reduced-precision product a @ b is fastest in a's dtype (ATen's bfloat16 GEMM, which
// accumulates in float32) rather than in float32.
bool product_in_own_dtype(GemmSite site, const at::Tensor& a, const at::Tensor& b) {
  const TuneKey key{site, a.size(0), b.size(1), a.size(1), a.scalar_type(), 0};
  const auto candidates = product_candidates(a, b);
  return std::string(candidates[choose_fastest(key, candidates)].name) == "aten";
}

}  // namespace

at::Tensor matmul_on_fastest_engine(GemmSite site, const at::Tensor& a, const at::Tensor& b) {
  if (!is_reduced_precision(a.scalar_type())) {
    return at::mm(a, b);
  }
  const TuneKey key{site, a.size(0), b.size(1), a.size(1), a.scalar_type(), 0};
  return run_fastest(key, product_candidates(a, b));
}

// In a's dtype the GEMM writes `out` itself (a strided view: BLAS's leading dimension), or
// accumulates into it (beta = 1: one rounding), instead of a product tensor copied or added in
// another pass.
void matmul_into(GemmSite site, const at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (!is_reduced_precision(out.scalar_type()) || product_in_own_dtype(site, a, b)) {
    at::Tensor result = out;
    at::mm_out(result, a, b);
    return;
  }
  out.copy_(at::mm(a.to(at::kFloat), b.to(at::kFloat)));
}

void add_matmul(GemmSite site, const at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (!is_reduced_precision(out.scalar_type()) || product_in_own_dtype(site, a, b)) {
    out.addmm_(a, b);
    return;
  }
  out.add_(at::mm(a.to(at::kFloat), b.to(at::kFloat)));
}

}  // namespace mmfast::cpu
