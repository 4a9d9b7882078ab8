// gated_fusion on the CPU (definition: mmfast/ops/gated_fusion.py).
//
// Forward: one GEMM over the never-built concatenation gives the gate logits (for two inputs with
// the sigmoid fused), then one vectorized, parallel pass over the rows turns them into the gates
// (a per-feature softmax over modalities when M > 2) and blends the inputs. The gates are the
// second output: with the inputs they are all the backward needs.
// Backward: one pass computes the logit gradient dz, the bias gradient and the direct part of each
// input gradient (dout * gate), then GEMMs add dz @ W to the input gradients and give dz.T @ cat(x).
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
#include "engine/segment_linear.h"
#include "ops/gated_fusion/gated_fusion.h"
#include "engine/cpu_capability.h"

namespace mmfast::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Features per block converted to compute_t on the stack (for every input at once).
constexpr int64_t kFeatureBlock = 64;
// exp(-80) is still a normal float: softmax terms below it would only be slow denormals.
constexpr double kMinExpArgument = -80.0;

// Row-major [rows, D] views of the inputs with unit feature stride (copied only when needed).
std::vector<at::Tensor> as_row_matrices(at::TensorList inputs, int64_t rows, int64_t dim) {
  std::vector<at::Tensor> matrices;
  matrices.reserve(inputs.size());
  for (const auto& x : inputs) {
    at::Tensor m = x.reshape({rows, dim});
    matrices.push_back(m.stride(1) == 1 || dim <= 1 ? m : m.contiguous());
  }
  return matrices;
}

template <typename scalar_t>
struct RowPointers {
  std::vector<const scalar_t*> data;
  std::vector<int64_t> row_stride;

  explicit RowPointers(const std::vector<at::Tensor>& matrices) {
    for (const auto& m : matrices) {
      data.push_back(m.const_data_ptr<scalar_t>());
      row_stride.push_back(m.stride(0));
    }
  }
  const scalar_t* row(size_t input, int64_t r) const { return data[input] + r * row_stride[input]; }
};

// out = x1 + (1 - g) * (x2 - x1) = g * x1 + (1 - g) * x2 for rows [begin, end).
template <typename scalar_t>
void blend_two(const RowPointers<scalar_t>& xs, const scalar_t* gates, scalar_t* out, int64_t dim, int64_t begin,
               int64_t end) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t x1_buf[kFeatureBlock], x2_buf[kFeatureBlock], g_buf[kFeatureBlock], out_buf[kFeatureBlock];
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t j0 = 0; j0 < dim; j0 += kFeatureBlock) {
      const int64_t len = std::min(kFeatureBlock, dim - j0);
      const acc_t* x1 = as_compute(xs.row(0, r) + j0, x1_buf, len);
      const acc_t* x2 = as_compute(xs.row(1, r) + j0, x2_buf, len);
      const acc_t* g = as_compute(gates + r * dim + j0, g_buf, len);
      acc_t* y = compute_target(out + r * dim + j0, out_buf);
      for (int64_t i = 0; i < len; i += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), len - i);
        const Vec a = Vec::loadu(x1 + i, n);
        const Vec b = Vec::loadu(x2 + i, n);
        at::vec::fmadd(Vec::loadu(g + i, n), a - b, b).store(y + i, n);
      }
      store_from_compute(out_buf, out + r * dim + j0, len);
    }
  }
}

// gates (in place over the logits, [rows, M*D] modality-major) = softmax over the M logits of
// each feature; out = sum_m gate_m * x_m, for rows [begin, end).
template <typename scalar_t>
void softmax_blend(const RowPointers<scalar_t>& xs, scalar_t* gates, scalar_t* out, int64_t count, int64_t dim,
                   int64_t begin, int64_t end) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t logit_buf[kMaxSegments][kFeatureBlock];
  alignas(64) acc_t x_buf[kFeatureBlock];
  alignas(64) acc_t out_buf[kFeatureBlock];
  alignas(64) acc_t gate_out_buf[kMaxSegments][kFeatureBlock];
  const acc_t* logits[kMaxSegments];
  const Vec floor(static_cast<acc_t>(kMinExpArgument));
  for (int64_t r = begin; r < end; ++r) {
    scalar_t* row_gates = gates + r * count * dim;
    for (int64_t j0 = 0; j0 < dim; j0 += kFeatureBlock) {
      const int64_t len = std::min(kFeatureBlock, dim - j0);
      for (int64_t m = 0; m < count; ++m) {
        logits[m] = as_compute(row_gates + m * dim + j0, logit_buf[m], len);
      }
      acc_t* y = compute_target(out + r * dim + j0, out_buf);
      for (int64_t i = 0; i < len; i += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), len - i);
        Vec top = Vec::loadu(logits[0] + i, n);
        for (int64_t m = 1; m < count; ++m) {
          top = at::vec::maximum(top, Vec::loadu(logits[m] + i, n));
        }
        Vec e[kMaxSegments];
        Vec total(0);
        for (int64_t m = 0; m < count; ++m) {
          e[m] = at::vec::maximum(Vec::loadu(logits[m] + i, n) - top, floor).exp();
          total = total + e[m];
        }
        const Vec inverse = Vec(1) / total;
        Vec acc(0);
        for (int64_t m = 0; m < count; ++m) {
          const Vec gate = e[m] * inverse;
          acc_t* gate_dst = compute_target(row_gates + m * dim + j0, gate_out_buf[m]);
          gate.store(gate_dst + i, n);
          const acc_t* x = as_compute(xs.row(m, r) + j0 + i, x_buf, n);
          acc = at::vec::fmadd(gate, Vec::loadu(x, n), acc);
        }
        acc.store(y + i, n);
      }
      for (int64_t m = 0; m < count; ++m) {
        store_from_compute(gate_out_buf[m], row_gates + m * dim + j0, len);
      }
      store_from_compute(out_buf, out + r * dim + j0, len);
    }
  }
}

int64_t row_grain(int64_t row_elements) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elements, 1)); }

std::tuple<at::Tensor, at::Tensor> gated_fusion_forward_cpu(at::TensorList inputs, const at::Tensor& weight,
                                                            const std::optional<at::Tensor>& bias) {
  const GatedFusionShape shape = check_gated_fusion_args(inputs, weight, bias);
  const auto options = inputs[0].options();
  if (shape.rows == 0) {
    return {at::empty(shape.output_sizes, options), at::empty({0, shape.logits}, options)};
  }
  const bool sigmoid_gate = shape.count == 2;
  // For two inputs the logits come out of the GEMM as the sigmoid gate already.
  at::Tensor gates =
      segments_linear(GemmSite{"gated_fusion.logits"}, inputs, weight.contiguous(), bias,
                      sigmoid_gate ? Activation::kSigmoid : Activation::kNone, shape.rows, shape.count * shape.dim)
          .contiguous();
  at::Tensor out = at::empty({shape.rows, shape.dim}, options);
  const std::vector<at::Tensor> matrices = as_row_matrices(inputs, shape.rows, shape.dim);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "mmfast_gated_fusion_forward", [&] {
    const RowPointers<scalar_t> xs(matrices);
    scalar_t* gate_data = gates.mutable_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, shape.rows, row_grain(shape.count * shape.dim), [&](int64_t begin, int64_t end) {
      if (sigmoid_gate) {
        blend_two(xs, gate_data, out_data, shape.dim, begin, end);
      } else {
        softmax_blend(xs, gate_data, out_data, shape.count, shape.dim, begin, end);
      }
    });
  });
  return {out.view(shape.output_sizes), gates};
}

// One row of the backward for two inputs: dz = dout * (x1 - x2) * g * (1 - g); the direct input
// gradients dout * g and dout * (1 - g) go to grad_row[0:D] and grad_row[D:2D] when wanted.
template <typename scalar_t>
void gate_grad_row_two(const scalar_t* dout, const scalar_t* x1, const scalar_t* x2, const scalar_t* g,
                       scalar_t* dz, scalar_t* grad_row, compute_t<scalar_t>* bias_acc, int64_t dim) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t dout_buf[kFeatureBlock], x1_buf[kFeatureBlock], x2_buf[kFeatureBlock], g_buf[kFeatureBlock];
  alignas(64) acc_t dz_buf[kFeatureBlock], d1_buf[kFeatureBlock], d2_buf[kFeatureBlock];
  for (int64_t j0 = 0; j0 < dim; j0 += kFeatureBlock) {
    const int64_t len = std::min(kFeatureBlock, dim - j0);
    const acc_t* go = as_compute(dout + j0, dout_buf, len);
    const acc_t* a = as_compute(x1 + j0, x1_buf, len);
    const acc_t* b = as_compute(x2 + j0, x2_buf, len);
    const acc_t* gate = as_compute(g + j0, g_buf, len);
    acc_t* dz_out = compute_target(dz + j0, dz_buf);
    acc_t* d1 = grad_row != nullptr ? compute_target(grad_row + j0, d1_buf) : d1_buf;
    acc_t* d2 = grad_row != nullptr ? compute_target(grad_row + dim + j0, d2_buf) : d2_buf;
    for (int64_t i = 0; i < len; i += Vec::size()) {
      const int64_t n = std::min<int64_t>(Vec::size(), len - i);
      const Vec gv = Vec::loadu(gate + i, n);
      const Vec dv = Vec::loadu(go + i, n);
      const Vec dzv = dv * (Vec::loadu(a + i, n) - Vec::loadu(b + i, n)) * gv * (Vec(1) - gv);
      dzv.store(dz_out + i, n);
      if (bias_acc != nullptr) {
        (Vec::loadu(bias_acc + j0 + i, n) + dzv).store(bias_acc + j0 + i, n);
      }
      if (grad_row != nullptr) {
        const Vec direct = dv * gv;
        direct.store(d1 + i, n);
        (dv - direct).store(d2 + i, n);
      }
    }
    store_from_compute(dz_buf, dz + j0, len);
    if (grad_row != nullptr) {
      store_from_compute(d1_buf, grad_row + j0, len);
      store_from_compute(d2_buf, grad_row + dim + j0, len);
    }
  }
}

// One row of the backward for M > 2 inputs: with da_m = dout * x_m, dz_m = a_m * (da_m - sum_k a_k
// da_k); the direct input gradients dout * a_m go to grad_row[m*D:(m+1)*D] when wanted.
template <typename scalar_t>
void gate_grad_row_softmax(const scalar_t* dout, const RowPointers<scalar_t>& xs, int64_t r, const scalar_t* a,
                           scalar_t* dz, scalar_t* grad_row, compute_t<scalar_t>* bias_acc, int64_t count,
                           int64_t dim) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t dout_buf[kFeatureBlock], x_buf[kFeatureBlock], a_buf[kFeatureBlock];
  alignas(64) acc_t dz_buf[kMaxSegments][kFeatureBlock], direct_buf[kMaxSegments][kFeatureBlock];
  for (int64_t j0 = 0; j0 < dim; j0 += kFeatureBlock) {
    const int64_t len = std::min(kFeatureBlock, dim - j0);
    const acc_t* go = as_compute(dout + j0, dout_buf, len);
    for (int64_t i = 0; i < len; i += Vec::size()) {
      const int64_t n = std::min<int64_t>(Vec::size(), len - i);
      const Vec dv = Vec::loadu(go + i, n);
      Vec gate[kMaxSegments];
      Vec da[kMaxSegments];
      Vec weighted(0);
      for (int64_t m = 0; m < count; ++m) {
        gate[m] = Vec::loadu(as_compute(a + m * dim + j0 + i, a_buf, n), n);
        da[m] = dv * Vec::loadu(as_compute(xs.row(m, r) + j0 + i, x_buf, n), n);
        weighted = at::vec::fmadd(gate[m], da[m], weighted);
      }
      for (int64_t m = 0; m < count; ++m) {
        const Vec dzv = gate[m] * (da[m] - weighted);
        dzv.store(compute_target(dz + m * dim + j0, dz_buf[m]) + i, n);
        if (bias_acc != nullptr) {
          acc_t* acc = bias_acc + m * dim + j0 + i;
          (Vec::loadu(acc, n) + dzv).store(acc, n);
        }
        if (grad_row != nullptr) {
          (dv * gate[m]).store(compute_target(grad_row + m * dim + j0, direct_buf[m]) + i, n);
        }
      }
    }
    for (int64_t m = 0; m < count; ++m) {
      store_from_compute(dz_buf[m], dz + m * dim + j0, len);
      if (grad_row != nullptr) {
        store_from_compute(direct_buf[m], grad_row + m * dim + j0, len);
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_fusion_backward_cpu(const at::Tensor& grad_output,
                                                                         at::TensorList inputs,
                                                                         const at::Tensor& weight,
                                                                         const at::Tensor& gates,
                                                                         std::array<bool, 3> output_mask) {
  const GatedFusionShape shape = check_gated_fusion_args(inputs, weight, std::nullopt);
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(shape.output_sizes), "grad_output: expected shape ",
                    at::IntArrayRef(shape.output_sizes), ", got ", grad_output.sizes());
  TORCH_CHECK_VALUE(gates.dim() == 2 && gates.size(0) == shape.rows && gates.size(1) == shape.logits,
                    "gates: expected shape [", shape.rows, ", ", shape.logits,
                    "] (the second output of gated_fusion_forward), got ", gates.sizes());
  const auto options = grad_output.options();
  const int64_t in_features = shape.count * shape.dim;
  std::vector<int64_t> input_sizes(shape.output_sizes);
  input_sizes.back() = in_features;
  const bool want_input = output_mask[0], want_weight = output_mask[1], want_bias = output_mask[2];
  at::Tensor grad_input = want_input ? at::empty({shape.rows, in_features}, options) : at::empty({0}, options);
  at::Tensor grad_bias = want_bias ? at::zeros({shape.logits}, options) : at::empty({0}, options);
  if (shape.rows == 0) {
    at::Tensor grad_weight = want_weight ? at::zeros_like(weight) : at::empty({0}, options);
    return {want_input ? grad_input.view(input_sizes) : grad_input, grad_weight, grad_bias};
  }
  const at::Tensor dout = grad_output.reshape({shape.rows, shape.dim}).contiguous();
  const at::Tensor gate_values = gates.contiguous();
  at::Tensor dz = at::empty({shape.rows, shape.logits}, options);
  const std::vector<at::Tensor> matrices = as_row_matrices(inputs, shape.rows, shape.dim);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dz.scalar_type(), "mmfast_gated_fusion_backward", [&] {
    using acc_t = compute_t<scalar_t>;
    const RowPointers<scalar_t> xs(matrices);
    const int threads = at::get_num_threads();
    // One row of partial bias sums per thread, summed at the end.
    at::Tensor partial;
    if (want_bias) {
      partial = at::zeros({threads, shape.logits}, options.dtype(c10::CppTypeToScalarType<acc_t>::value));
    }
    acc_t* partial_data = want_bias ? partial.mutable_data_ptr<acc_t>() : nullptr;
    const scalar_t* dout_data = dout.const_data_ptr<scalar_t>();
    const scalar_t* gate_data = gate_values.const_data_ptr<scalar_t>();
    scalar_t* dz_data = dz.mutable_data_ptr<scalar_t>();
    scalar_t* grad_data = want_input ? grad_input.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, shape.rows, row_grain(2 * in_features), [&](int64_t begin, int64_t end) {
      acc_t* acc = want_bias ? partial_data + at::get_thread_num() * shape.logits : nullptr;
      for (int64_t r = begin; r < end; ++r) {
        scalar_t* grad_row = want_input ? grad_data + r * in_features : nullptr;
        if (shape.count == 2) {
          gate_grad_row_two(dout_data + r * shape.dim, xs.row(0, r), xs.row(1, r), gate_data + r * shape.dim,
                            dz_data + r * shape.dim, grad_row, acc, shape.dim);
        } else {
          gate_grad_row_softmax(dout_data + r * shape.dim, xs, r, gate_data + r * shape.logits,
                                dz_data + r * shape.logits, grad_row, acc, shape.count, shape.dim);
        }
      }
    });
    if (want_bias) {
      grad_bias.copy_(partial.sum(0));
    }
  });
  if (want_input) {
    add_matmul(GemmSite{"gated_fusion.grad_input"}, grad_input, dz, weight);
  }
  at::Tensor grad_weight = want_weight ? segments_grad_weight(GemmSite{"gated_fusion.grad_weight"}, dz, inputs,
                                                              shape.rows, in_features)
                                       : at::empty({0}, options);
  return {want_input ? grad_input.view(input_sizes) : grad_input, grad_weight, grad_bias};
}

}  // namespace

MMFAST_CPU_KERNELS(m) {
  m.impl("gated_fusion_forward", &gated_fusion_forward_cpu);
  m.impl("gated_fusion_backward", &gated_fusion_backward_cpu);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
