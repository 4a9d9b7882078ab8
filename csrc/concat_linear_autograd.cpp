// The autograd formula of mmfast::concat_linear_forward, for every device.
//
// Written in C++ so that a call that needs no gradient pays nothing for it (a Python autograd
// kernel costs about 10 us per call, a sixth of a batch-1 forward). The backward keeps the inputs
// (only when the weight needs a gradient: the weight gradient is the only reader), the weight,
// and either the pre-activation (gelu, gelu_tanh, silu) or the output (relu, sigmoid, tanh).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <vector>

#include "activation_names.h"
#include "grad_recording.h"

namespace mmfast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> forward_op(at::TensorList inputs, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias, c10::string_view activation,
                                              bool save) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::concat_linear_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(at::TensorList, const at::Tensor&,
                                                                 const std::optional<at::Tensor>&,
                                                                 c10::string_view, bool)>();
  return op.call(inputs, weight, bias, activation, save);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_op(const at::Tensor& grad_output, at::TensorList inputs,
                                                           const at::Tensor& weight, const at::Tensor& saved,
                                                           c10::string_view activation, std::array<bool, 3> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::concat_linear_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, at::TensorList, const at::Tensor&, const at::Tensor&,
                           c10::string_view, std::array<bool, 3>)>();
  return call_backward_op([&] {
    return op.call(grad_output, inputs, weight, saved, activation, mask);
  });
}

class ConcatLinearFunction : public torch::autograd::Function<ConcatLinearFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, c10::string_view activation, bool save) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, saved] = forward_op(inputs, weight, bias, activation, save);
    const SavedForBackward kind = saved_for_backward(parse_activation(activation));
    std::vector<int64_t> segment_sizes;
    for (const auto& x : inputs) {
      segment_sizes.push_back(x.size(-1));
    }
    ctx->saved_data["activation"] = std::string(activation);
    ctx->saved_data["segment_sizes"] = segment_sizes;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    variable_list to_save = {weight, kind == SavedForBackward::kPreactivation ? saved
                                     : kind == SavedForBackward::kOutput      ? output
                                                                              : at::Tensor()};
    if (weight.requires_grad()) {
      to_save.insert(to_save.end(), inputs.begin(), inputs.end());
    }
    ctx->save_for_backward(to_save);
    ctx->mark_non_differentiable({saved});
    return {output, saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const std::vector<int64_t> segment_sizes = ctx->saved_data["segment_sizes"].toIntVector();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::string activation = ctx->saved_data["activation"].toStringRef();
    const auto count = static_cast<int64_t>(segment_sizes.size());
    // One gradient per forward argument: the inputs, weight, bias, activation, save flag.
    variable_list result(count + 4);
    const at::Tensor& grad_output = grads[0];
    if (!grad_output.defined()) {
      return result;
    }
    bool any_input = false;
    for (int64_t i = 0; i < count; ++i) {
      any_input = any_input || ctx->needs_input_grad(i);
    }
    const std::array<bool, 3> mask = {any_input, ctx->needs_input_grad(count),
                                      has_bias && ctx->needs_input_grad(count + 1)};
    const at::Tensor& weight = saved[0];
    const at::Tensor kept = saved[1].defined() ? saved[1] : at::empty({0}, grad_output.options());
    const std::vector<at::Tensor> inputs(saved.begin() + 2, saved.end());
    auto [grad_input, grad_weight, grad_bias] = backward_op(grad_output, inputs, weight, kept, activation, mask);
    if (mask[0]) {
      int64_t offset = 0;
      for (int64_t i = 0; i < count; ++i) {
        result[i] = grad_input.narrow(-1, offset, segment_sizes[i]);
        offset += segment_sizes[i];
      }
    }
    if (mask[1]) {
      result[count] = grad_weight;
    }
    if (mask[2]) {
      result[count + 1] = grad_bias;
    }
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> concat_linear_forward_autograd(at::TensorList inputs, const at::Tensor& weight,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  c10::string_view activation, bool save) {
  if (!autograd_records(inputs, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(inputs, weight, bias, activation, save);
  }
  auto outputs = ConcatLinearFunction::apply(inputs, weight, bias, activation, save);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  m.impl("concat_linear_forward", &concat_linear_forward_autograd);
  // Differentiating the backward (create_graph=True, then backward through the gradients)
  // raises "derivative for mmfast::concat_linear_backward is not implemented" instead of going silently wrong.
  m.impl("concat_linear_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mmfast
