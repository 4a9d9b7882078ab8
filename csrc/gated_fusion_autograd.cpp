// The autograd formula of mmfast::gated_fusion_forward, for every device. It keeps the inputs,
// the weight and the gates (the forward's second output); the gradients come from
// mmfast::gated_fusion_backward, whose input gradient is one [*, M*D] tensor split here.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "grad_recording.h"

namespace mmfast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> forward_op(at::TensorList inputs, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::gated_fusion_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(at::TensorList, const at::Tensor&,
                                                                 const std::optional<at::Tensor>&)>();
  return op.call(inputs, weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_op(const at::Tensor& grad_output, at::TensorList inputs,
                                                           const at::Tensor& weight, const at::Tensor& gates,
                                                           std::array<bool, 3> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::gated_fusion_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, at::TensorList, const at::Tensor&, const at::Tensor&,
                           std::array<bool, 3>)>();
  return call_backward_op([&] {
    return op.call(grad_output, inputs, weight, gates, mask);
  });
}

class GatedFusionFunction : public torch::autograd::Function<GatedFusionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, gates] = forward_op(inputs, weight, bias);
    ctx->saved_data["count"] = static_cast<int64_t>(inputs.size());
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    variable_list to_save = {weight, gates};
    to_save.insert(to_save.end(), inputs.begin(), inputs.end());
    ctx->save_for_backward(to_save);
    ctx->mark_non_differentiable({gates});
    return {output, gates};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const int64_t count = ctx->saved_data["count"].toInt();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // One gradient per forward argument: the inputs, weight, bias.
    variable_list result(count + 2);
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
    const std::vector<at::Tensor> inputs(saved.begin() + 2, saved.end());
    auto [grad_input, grad_weight, grad_bias] = backward_op(grad_output, inputs, saved[0], saved[1], mask);
    if (mask[0]) {
      const int64_t dim = inputs[0].size(-1);
      for (int64_t i = 0; i < count; ++i) {
        result[i] = grad_input.narrow(-1, i * dim, dim);
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

std::tuple<at::Tensor, at::Tensor> gated_fusion_forward_autograd(at::TensorList inputs, const at::Tensor& weight,
                                                                 const std::optional<at::Tensor>& bias) {
  if (!autograd_records(inputs, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(inputs, weight, bias);
  }
  auto outputs = GatedFusionFunction::apply(inputs, weight, bias);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  m.impl("gated_fusion_forward", &gated_fusion_forward_autograd);
  // Differentiating the backward (create_graph=True, then backward through the gradients)
  // raises "derivative for mmfast::gated_fusion_backward is not implemented" instead of going silently wrong.
  m.impl("gated_fusion_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mmfast
