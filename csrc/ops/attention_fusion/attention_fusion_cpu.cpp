// attention_fusion on the CPU (definition: mmfast/ops/attention_fusion.py).
//
// Forward: one GEMM over the never-built concatenation gives the M scores of each row; one
// vectorized, parallel pass takes their softmax w and writes the inputs scaled by it, w_m * x_m,
// into a reused scratch matrix; then sum_m w_m * (x_m @ P_m.T + p_m) = (w x) @ cat(P).T + w @ p is
// GEMMs only, so the [*, M, D_out] stack of projections that eager code builds never exists.
// Backward: G_m = dout @ P_m (GEMMs into the input-gradient buffer), then one pass computes
// dw_m = dout . y_m = G_m . x_m + dout . p_m, the score gradient ds = w * (dw - sum_m w_m dw_m) and
// scales G_m by w_m; GEMMs then add ds @ S to the input gradients and give every weight gradient.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "engine/compute_type.h"
#include "engine/segment_gemv.h"
#include "engine/segment_linear.h"
#include "engine/segments.h"
#include "ops/attention_fusion/attention_fusion.h"
#include "engine/cpu_capability.h"

namespace mmfast::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

constexpr int64_t kFeatureBlock = 256;
constexpr double kMinExpArgument = -80.0;

int64_t row_grain(int64_t row_elements) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elements, 1)); }

// The inputs as [rows, D_m] matrices with unit feature stride (copied only when needed).
std::vector<at::Tensor> as_row_matrices(at::TensorList inputs, int64_t rows) {
  std::vector<at::Tensor> matrices;
  for (const auto& x : inputs) {
    at::Tensor m = x.reshape({rows, x.size(-1)});
    matrices.push_back(m.stride(1) == 1 || m.size(1) <= 1 ? m : m.contiguous());
  }
  return matrices;
}

// dst[0:n] = factor * src[0:n].
template <typename scalar_t>
void scale_row(const scalar_t* src, scalar_t* dst, compute_t<scalar_t> factor, int64_t n) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t in_buf[kFeatureBlock], out_buf[kFeatureBlock];
  const Vec f(factor);
  for (int64_t j0 = 0; j0 < n; j0 += kFeatureBlock) {
    const int64_t len = std::min(kFeatureBlock, n - j0);
    const acc_t* x = as_compute(src + j0, in_buf, len);
    acc_t* y = compute_target(dst + j0, out_buf);
    for (int64_t i = 0; i < len; i += Vec::size()) {
      const int64_t count = std::min<int64_t>(Vec::size(), len - i);
      (f * Vec::loadu(x + i, count)).store(y + i, count);
    }
    store_from_compute(out_buf, dst + j0, len);
  }
}

// sum_j a[j] * b[j] in compute_t; with `scale_a` also a[j] *= factor in place.
template <typename scalar_t>
compute_t<scalar_t> dot_then_scale(scalar_t* a, const scalar_t* b, int64_t n, bool scale_a,
                                   compute_t<scalar_t> factor) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t a_buf[kFeatureBlock], b_buf[kFeatureBlock], out_buf[kFeatureBlock];
  Vec total(0);
  const Vec f(factor);
  for (int64_t j0 = 0; j0 < n; j0 += kFeatureBlock) {
    const int64_t len = std::min(kFeatureBlock, n - j0);
    const acc_t* av = as_compute(a + j0, a_buf, len);
    const acc_t* bv = as_compute(b + j0, b_buf, len);
    acc_t* scaled = compute_target(a + j0, out_buf);
    for (int64_t i = 0; i < len; i += Vec::size()) {
      const int64_t count = std::min<int64_t>(Vec::size(), len - i);
      const Vec x = Vec::loadu(av + i, count);
      total = at::vec::fmadd(x, Vec::loadu(bv + i, count), total);
      if (scale_a) {
        (x * f).store(scaled + i, count);
      }
    }
    if (scale_a) {
      store_from_compute(out_buf, a + j0, len);
    }
  }
  return at::vec::vec_reduce_all<acc_t>([](Vec& x, Vec& y) { return x + y; }, total);
}

// The softmax of each row's M scores (in place), and, when `scaled` is defined, the scaled inputs
// w_m * x_m in its column segments.
void softmax_and_scale(const at::Tensor& scores, const std::vector<at::Tensor>& inputs, const at::Tensor& scaled,
                       bool normalize) {
  const int64_t rows = scores.size(0);
  const int64_t count = scores.size(1);
  const int64_t in_features = scaled.defined() ? scaled.size(1) : 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, scores.scalar_type(), "mmfast_attention_softmax", [&] {
    using acc_t = compute_t<scalar_t>;
    scalar_t* score_data = scores.mutable_data_ptr<scalar_t>();
    scalar_t* scaled_data = scaled.defined() ? scaled.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, rows, row_grain(in_features + count), [&](int64_t begin, int64_t end) {
      acc_t weights[kMaxSegments];
      for (int64_t r = begin; r < end; ++r) {
        scalar_t* row = score_data + r * count;
        if (normalize) {
          acc_t top = static_cast<acc_t>(row[0]);
          for (int64_t m = 1; m < count; ++m) {
            top = std::max(top, static_cast<acc_t>(row[m]));
          }
          acc_t total = 0;
          for (int64_t m = 0; m < count; ++m) {
            weights[m] = std::exp(std::max(static_cast<acc_t>(row[m]) - top, static_cast<acc_t>(kMinExpArgument)));
            total += weights[m];
          }
          for (int64_t m = 0; m < count; ++m) {
            weights[m] /= total;
            row[m] = static_cast<scalar_t>(weights[m]);
          }
        } else {
          for (int64_t m = 0; m < count; ++m) {
            weights[m] = static_cast<acc_t>(row[m]);
          }
        }
        if (scaled_data == nullptr) {
          continue;
        }
        scalar_t* dst = scaled_data + r * in_features;
        for (int64_t m = 0; m < count; ++m) {
          const at::Tensor& x = inputs[m];
          const int64_t width = x.size(1);
          scale_row(x.const_data_ptr<scalar_t>() + r * x.stride(0), dst, weights[m], width);
          dst += width;
        }
      }
    });
  });
}

// sum_m scaled[:, segment m] @ P_m.T (+ weights @ stack(p_m)), on the fastest way for the shape:
// one GEMM per segment accumulating, one GEMM over the concatenated projection weights (ATen or
// oneDNN; for bfloat16 / float16 also in float32, see float32_linear), or for a few rows one pass
// over the weights (segment_gemv).
at::Tensor project(const at::Tensor& scaled, const at::Tensor& weights, at::TensorList proj_weights,
                   at::TensorList proj_biases, const AttentionFusionShape& shape) {
  const bool has_bias = !proj_biases.empty();
  auto add_bias = [&](at::Tensor out) {
    if (has_bias) {
      out.addmm_(weights, at::stack(proj_biases));
    }
    return out;
  };
  const TuneKey key{GemmSite{"attention_fusion.projection"}, shape.rows, shape.out_dim, shape.in_features,
                    scaled.scalar_type(), static_cast<int>(shape.count) * 2 + static_cast<int>(has_bias)};
  std::vector<GemmCandidate> candidates = {
      {"aten", [&] {
         at::Tensor out;
         int64_t offset = 0;
         for (int64_t m = 0; m < shape.count; ++m) {
           const at::Tensor segment = scaled.narrow(1, offset, shape.segment_sizes[m]);
           offset += shape.segment_sizes[m];
           if (!out.defined()) {
             out = at::mm(segment, proj_weights[m].t());
           } else {
             out.addmm_(segment, proj_weights[m].t());
           }
         }
         return add_bias(out);
       }}};
  if (shape.rows <= kMaxSegmentGemvRows) {
    candidates.push_back({"segment_gemv", [&] {
                            std::vector<at::Tensor> segments;
                            int64_t offset = 0;
                            for (int64_t m = 0; m < shape.count; ++m) {
                              segments.push_back(scaled.narrow(1, offset, shape.segment_sizes[m]));
                              offset += shape.segment_sizes[m];
                            }
                            return segment_gemv(segments, proj_weights, std::nullopt, weights, proj_biases);
                          }});
  }
  if (is_reduced_precision(scaled.scalar_type())) {
    candidates.push_back({"aten_float32", [&] {
                            at::Tensor out = at::mm(scaled.to(at::kFloat), at::cat(proj_weights, 1).to(at::kFloat).t());
                            if (has_bias) {
                              out.addmm_(weights.to(at::kFloat), at::stack(proj_biases).to(at::kFloat));
                            }
                            return out.to(scaled.scalar_type());
                          }});
  }
  if (shape.count > 1) {
    candidates.push_back({"aten_cat_weights", [&] { return add_bias(at::mm(scaled, at::cat(proj_weights, 1).t())); }});
    candidates.push_back({"onednn", [&] {
                            return add_bias(onednn_linear(scaled, at::cat(proj_weights, 1), std::nullopt,
                                                          Activation::kNone));
                          }});
  }
  return run_fastest(key, candidates);
}

std::tuple<at::Tensor, at::Tensor> attention_fusion_forward_cpu(at::TensorList inputs, at::TensorList proj_weights,
                                                                at::TensorList proj_biases,
                                                                const at::Tensor& score_weight,
                                                                const std::optional<at::Tensor>& score_bias) {
  const AttentionFusionShape shape =
      check_attention_fusion_args(inputs, proj_weights, proj_biases, score_weight, score_bias);
  const auto options = inputs[0].options();
  if (shape.rows == 0) {
    return {at::empty(shape.output_sizes, options), at::empty(shape.weights_sizes, options)};
  }
  at::Tensor weights = segments_linear(GemmSite{"attention_fusion.scores"}, inputs, score_weight.contiguous(), score_bias,
                                       Activation::kNone, shape.rows, shape.in_features)
                           .contiguous();
  const at::Tensor scaled =
      scratch_buffer(ScratchSlot::kScaledInputs, shape.rows * shape.in_features, options)
          .view({shape.rows, shape.in_features});
  softmax_and_scale(weights, as_row_matrices(inputs, shape.rows), scaled, /*normalize=*/true);
  at::Tensor out = project(scaled, weights, proj_weights, proj_biases, shape);
  return {out.view(shape.output_sizes), weights.view(shape.weights_sizes)};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor>
attention_fusion_backward_cpu(const at::Tensor& grad_output, const std::optional<at::Tensor>& grad_weights,
                              at::TensorList inputs, at::TensorList proj_weights, at::TensorList proj_biases,
                              const at::Tensor& score_weight, const at::Tensor& weights,
                              std::array<bool, 5> output_mask) {
  const AttentionFusionShape shape =
      check_attention_fusion_args(inputs, proj_weights, proj_biases, score_weight, std::nullopt);
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(shape.output_sizes), "grad_output: expected shape ",
                    at::IntArrayRef(shape.output_sizes), ", got ", grad_output.sizes());
  TORCH_CHECK_VALUE(weights.sizes() == at::IntArrayRef(shape.weights_sizes), "weights: expected shape ",
                    at::IntArrayRef(shape.weights_sizes), " (the second output of attention_fusion_forward), got ",
                    weights.sizes());
  const bool has_grad_weights = grad_weights.has_value() && grad_weights->defined();
  if (has_grad_weights) {
    TORCH_CHECK_VALUE(grad_weights->sizes() == weights.sizes(), "grad_weights: expected shape ", weights.sizes(),
                      ", got ", grad_weights->sizes());
  }
  const auto [want_input, want_proj_weight, want_proj_bias_flag, want_score_weight, want_score_bias] = output_mask;
  const bool want_proj_bias = want_proj_bias_flag && !proj_biases.empty();
  const bool want_scores = want_input || want_score_weight || want_score_bias;
  const auto options = grad_output.options();
  const int64_t rows = shape.rows;
  std::vector<int64_t> input_sizes(shape.output_sizes);
  input_sizes.back() = shape.in_features;

  at::Tensor grad_input = at::empty({0}, options);
  std::vector<at::Tensor> grad_proj_weights, grad_proj_biases;
  at::Tensor grad_score_weight = at::empty({0}, options);
  at::Tensor grad_score_bias = at::empty({0}, options);
  if (rows == 0) {
    if (want_input) {
      grad_input = at::empty(input_sizes, options);
    }
    for (int64_t m = 0; m < shape.count; ++m) {
      if (want_proj_weight) {
        grad_proj_weights.push_back(at::zeros_like(proj_weights[m]));
      }
      if (want_proj_bias) {
        grad_proj_biases.push_back(at::zeros_like(proj_biases[m]));
      }
    }
    if (want_score_weight) {
      grad_score_weight = at::zeros_like(score_weight);
    }
    if (want_score_bias) {
      grad_score_bias = at::zeros({shape.count}, options);
    }
    return {grad_input, grad_proj_weights, grad_proj_biases, grad_score_weight, grad_score_bias};
  }

  const at::Tensor dout = grad_output.reshape({rows, shape.out_dim}).contiguous();
  const at::Tensor w = weights.reshape({rows, shape.count}).contiguous();
  const std::vector<at::Tensor> matrices = as_row_matrices(inputs, rows);
  at::Tensor ds;
  if (want_scores) {
    // G_m = dout @ P_m, written where the input gradient goes.
    at::Tensor projected_grad = at::empty({rows, shape.in_features}, options);
    int64_t offset = 0;
    for (int64_t m = 0; m < shape.count; ++m) {
      at::Tensor segment = projected_grad.narrow(1, offset, shape.segment_sizes[m]);
      matmul_into(GemmSite{"attention_fusion.grad_input"}, segment, dout, proj_weights[m]);
      offset += shape.segment_sizes[m];
    }
    // dw starts as dout . p_m plus any gradient reaching the weights output directly.
    at::Tensor dw = proj_biases.empty() ? at::zeros({rows, shape.count}, options)
                                        : at::mm(dout, at::stack(proj_biases).t());
    if (has_grad_weights) {
      dw.add_(grad_weights->reshape({rows, shape.count}));
    }
    dw = dw.contiguous();
    ds = at::empty({rows, shape.count}, options);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, ds.scalar_type(), "mmfast_attention_score_grad", [&] {
      using acc_t = compute_t<scalar_t>;
      scalar_t* g_data = projected_grad.mutable_data_ptr<scalar_t>();
      const scalar_t* w_data = w.const_data_ptr<scalar_t>();
      const scalar_t* dw_data = dw.const_data_ptr<scalar_t>();
      scalar_t* ds_data = ds.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, rows, row_grain(2 * shape.in_features), [&](int64_t begin, int64_t end) {
        acc_t dweight[kMaxSegments];
        for (int64_t r = begin; r < end; ++r) {
          scalar_t* g_row = g_data + r * shape.in_features;
          acc_t weighted = 0;
          for (int64_t m = 0; m < shape.count; ++m) {
            const at::Tensor& x = matrices[m];
            const acc_t weight = static_cast<acc_t>(w_data[r * shape.count + m]);
            dweight[m] = dot_then_scale<scalar_t>(g_row, x.const_data_ptr<scalar_t>() + r * x.stride(0),
                                                  shape.segment_sizes[m], want_input, weight) +
                         static_cast<acc_t>(dw_data[r * shape.count + m]);
            weighted += weight * dweight[m];
            g_row += shape.segment_sizes[m];
          }
          for (int64_t m = 0; m < shape.count; ++m) {
            const acc_t weight = static_cast<acc_t>(w_data[r * shape.count + m]);
            ds_data[r * shape.count + m] = static_cast<scalar_t>(weight * (dweight[m] - weighted));
          }
        }
      });
    });
    if (want_input) {
      add_matmul(GemmSite{"attention_fusion.grad_input"}, projected_grad, ds, score_weight);
      grad_input = projected_grad.view(input_sizes);
    }
    if (want_score_weight) {
      grad_score_weight =
          segments_grad_weight(GemmSite{"attention_fusion.grad_score_weight"}, ds, inputs, rows, shape.in_features);
    }
    if (want_score_bias) {
      grad_score_bias = ds.sum(0);
    }
  }
  if (want_proj_weight) {
    // dP_m = dout.T @ (w_m x_m), from the scaled inputs rebuilt in the scratch matrix.
    const at::Tensor scaled =
        scratch_buffer(ScratchSlot::kScaledInputs, rows * shape.in_features, options).view({rows, shape.in_features});
    softmax_and_scale(w, matrices, scaled, /*normalize=*/false);
    int64_t offset = 0;
    for (int64_t m = 0; m < shape.count; ++m) {
      grad_proj_weights.push_back(matmul_on_fastest_engine(GemmSite{"attention_fusion.grad_proj_weight"}, dout.t(),
                                                           scaled.narrow(1, offset, shape.segment_sizes[m]))
                                      .to(dout.scalar_type()));
      offset += shape.segment_sizes[m];
    }
  }
  if (want_proj_bias) {
    const at::Tensor per_modality = at::mm(w.t(), dout);
    for (int64_t m = 0; m < shape.count; ++m) {
      grad_proj_biases.push_back(per_modality[m].clone());
    }
  }
  return {grad_input, grad_proj_weights, grad_proj_biases, grad_score_weight, grad_score_bias};
}

}  // namespace

MMFAST_CPU_KERNELS(m) {
  m.impl("attention_fusion_forward", &attention_fusion_forward_cpu);
  m.impl("attention_fusion_backward", &attention_fusion_backward_cpu);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
