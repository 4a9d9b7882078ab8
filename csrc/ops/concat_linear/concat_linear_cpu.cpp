// concat_linear on the CPU: act(cat(inputs) @ weight.T + bias) and its backward.
//
// Forward: the segments are gathered into a reused scratch matrix (never part of the autograd
// graph, never saved), then one GEMM accumulates over the whole K in float32 as F.linear would,
// with bias and activation fused by oneDNN where that engine is the faster one. Backward: one
// pass computes grad * act'(.) and the bias gradient, then GEMMs write the input and weight
// gradients.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "engine/activation_names.h"
#include "ops/concat_linear/concat_linear.h"
#include "engine/activation_kernels.h"
#include "engine/segment_linear.h"
#include "engine/cpu_capability.h"

namespace mmfast::cpu {
namespace CPU_CAPABILITY {
namespace {

std::tuple<at::Tensor, at::Tensor> concat_linear_forward_cpu(at::TensorList inputs, const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias,
                                                             c10::string_view activation, bool save_for_backward) {
  const Activation act = parse_activation(activation);
  const ConcatLinearShape shape = check_concat_linear_args(inputs, weight, bias);
  const bool keep_preactivation =
      save_for_backward && mmfast::saved_for_backward(act) == SavedForBackward::kPreactivation;
  const auto options = inputs[0].options();
  if (shape.rows == 0) {
    return {at::empty(shape.output_sizes, options),
            keep_preactivation ? at::empty(shape.output_sizes, options) : at::empty({0}, options)};
  }
  const at::Tensor w = weight.contiguous();
  if (!keep_preactivation) {
    at::Tensor out = segments_linear(GemmSite{"concat_linear.forward"}, inputs, w, bias, act, shape.rows, shape.in_features);
    return {out.view(shape.output_sizes), at::empty({0}, options)};
  }
  at::Tensor pre = segments_linear(GemmSite{"concat_linear.forward"}, inputs, w, bias, Activation::kNone, shape.rows,
                                   shape.in_features);
  at::Tensor out = at::empty_like(pre);
  activation_forward(pre, out, act);
  return {out.view(shape.output_sizes), pre.view(shape.output_sizes)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> concat_linear_backward_cpu(
    const at::Tensor& grad_output, at::TensorList inputs, const at::Tensor& weight, const at::Tensor& saved,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const Activation act = parse_activation(activation);
  const ConcatLinearBackwardShape shape =
      check_concat_linear_backward_args(grad_output, inputs, weight, saved, activation, output_mask[1]);
  const int64_t rows = shape.rows, in_features = shape.in_features, out_features = shape.out_features;
  const std::vector<int64_t>& input_sizes = shape.input_sizes;
  const auto options = grad_output.options();

  const at::Tensor grad2d = grad_output.reshape({rows, out_features}).contiguous();
  at::Tensor grad_bias = output_mask[2] ? at::empty({out_features}, options) : at::empty({0}, options);
  at::Tensor grad_pre;
  if (act == Activation::kNone) {
    grad_pre = grad2d;
    if (output_mask[2]) {
      grad_bias.copy_(grad2d.sum(0));
    }
  } else {
    grad_pre = at::empty_like(grad2d);
    activation_backward(grad2d, saved.reshape({rows, out_features}).contiguous(), act, grad_pre,
                        output_mask[2] ? grad_bias : at::Tensor());
  }

  at::Tensor grad_input = at::empty({0}, options);
  if (output_mask[0] && output_mask[1] && rows > 0) {
    auto [input_part, weight_part] = segments_linear_backward(
        {GemmSite{"concat_linear.grad_input"}, GemmSite{"concat_linear.grad_weight"}, GemmSite{"concat_linear.backward"}},
        grad_pre, weight, inputs, rows, in_features);
    return {input_part.view(input_sizes), weight_part, grad_bias};
  }
  if (output_mask[0]) {
    grad_input = rows == 0 ? at::empty(input_sizes, options)
                           : linear_on_fastest_engine(GemmSite{"concat_linear.grad_input"}, grad_pre, weight.t(),
                                                      std::nullopt, Activation::kNone)
                                 .view(input_sizes);
  }
  at::Tensor grad_weight = at::empty({0}, options);
  if (output_mask[1]) {
    grad_weight = rows == 0 ? at::zeros({out_features, in_features}, options)
                            : segments_grad_weight(GemmSite{"concat_linear.grad_weight"}, grad_pre, inputs, rows, in_features);
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

MMFAST_CPU_KERNELS(m) {
  m.impl("concat_linear_forward", &concat_linear_forward_cpu);
  m.impl("concat_linear_backward", &concat_linear_backward_cpu);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
