// gated_fusion: a sigmoid gate (two inputs) or a per-feature softmax over modalities (more)
// blending M inputs of one size (definition: mmfast/ops/gated_fusion.py). This file holds the op
// whole but for its kernels: the schemas, the argument checks, the composite entry point, the
// autocast rule and the autograd formula, the only one: the CPU kernel (gated_fusion_cpu.cpp)
// and the Triton kernels (mmfast/triton/gated_fusion.py, registered from Python for CUDA, and for
// every device with MMFAST_BACKEND=triton) share it.
//
// The autograd formula keeps the inputs, the weight and the gates (the forward's second output);
// the gradients come from mmfast::gated_fusion_backward, whose input gradient is one [*, M*D]
// tensor split here. The backward is an op of its own so that torch.compile sees it as one node.
#include "ops/gated_fusion/gated_fusion.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "engine/grad_recording.h"

namespace mmfast {

GatedFusionShape check_gated_fusion_args(at::TensorList inputs, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias) {
  const SegmentsShape segments = check_segments(inputs, "inputs", kGatedFusionLimits);
  GatedFusionShape shape;
  shape.count = static_cast<int64_t>(inputs.size());
  shape.rows = segments.rows;
  shape.dim = segments.segment_sizes[0];
  for (int64_t i = 1; i < shape.count; ++i) {
    TORCH_CHECK_VALUE(segments.segment_sizes[i] == shape.dim, "inputs[", i, "]: expected feature dim ", shape.dim,
                      " like inputs[0] (gated fusion blends inputs of one size), got ", segments.segment_sizes[i]);
  }
  TORCH_CHECK_VALUE(shape.dim >= 1, "inputs: expected a feature dim of at least 1, got 0");
  shape.logits = shape.count == 2 ? shape.dim : shape.count * shape.dim;
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == shape.logits && weight.size(1) == shape.count * shape.dim,
                    "weight: expected shape [", shape.logits, ", ", shape.count * shape.dim, "] for ", shape.count,
                    " inputs of dim ", shape.dim, shape.count == 2 ? " ([D, 2D] for two inputs)" : " ([M*D, M*D])",
                    ", got ", weight.sizes());
  check_parameter(weight, "weight", inputs[0], weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_parameter(*bias, "bias", inputs[0], {shape.logits});
  }
  shape.output_sizes = segments.leading_sizes;
  shape.output_sizes.push_back(shape.dim);
  return shape;
}

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
    // Gradients of outputs that never reached the loss stay undefined: materialising them would
    // allocate and zero a tensor the size of the output (the preactivation, the gates) per step.
    ctx->set_materialize_grads(false);
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
      const int64_t dim = inputs[0].sym_size(-1).guard_int(__FILE__, __LINE__);  // the feature dim only
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


using Signature = at::Tensor(at::TensorList, const at::Tensor&, const std::optional<at::Tensor>&);

// The entry point checks the arguments before any kernel runs, whichever device's kernel (C++ or
// Triton) the forward then reaches.
at::Tensor gated_fusion_composite(at::TensorList inputs, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias) {
  if (!has_symbolic_sizes(inputs)) {
    check_gated_fusion_args(inputs, weight, bias);
  }
  return std::get<0>(forward_op(inputs, weight, bias));
}

template <c10::DeviceType device_type>
at::Tensor gated_fusion_autocast(at::TensorList inputs, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mmfast::gated_fusion", "").typed<Signature>();
  return op.call(autocast_all<device_type>(inputs), autocast_one<device_type>(weight),
                 autocast_optional<device_type>(bias));
}

const RegisterInputLimits register_limits("gated_fusion", kGatedFusionLimits);

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmfast, m) {
  m.def("gated_fusion(Tensor[] inputs, Tensor weight, Tensor? bias=None) -> Tensor");
  m.def("gated_fusion_forward(Tensor[] inputs, Tensor weight, Tensor? bias) -> (Tensor output, Tensor gates)");
  m.def(
      "gated_fusion_backward(Tensor grad_output, Tensor[] inputs, Tensor weight, Tensor gates, "
      "bool[3] output_mask) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(mmfast, CompositeImplicitAutograd, m) {
  m.impl("gated_fusion", &gated_fusion_composite);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCPU, m) {
  m.impl("gated_fusion", &gated_fusion_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCUDA, m) {
  m.impl("gated_fusion", &gated_fusion_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  m.impl("gated_fusion_forward", &gated_fusion_forward_autograd);
  // Differentiating the backward (create_graph=True, then backward through the gradients)
  // raises "derivative for mmfast::gated_fusion_backward is not implemented" instead of going silently wrong.
  m.impl("gated_fusion_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mmfast
