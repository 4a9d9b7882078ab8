// concat_linear: act(cat(inputs, -1) @ weight.T + bias) without building the concatenation
// (definition: mmfast/ops/concat_linear.py). This file holds the op whole but for its kernels:
// the schemas, the argument checks, the composite entry point, the autocast rule and the autograd
// formula (the only one: every device's kernels, the CPU's, CUDA's, share it).
//
// `concat_linear` is what users call; it decides whether the backward will need the
// pre-activation and forwards to `concat_linear_forward`, which has the device kernels
// (concat_linear_cpu.cpp, concat_linear_cuda.cpp) and the autograd formula. The backward is an
// op of its own so that torch.compile sees it as one opaque node.
//
// The autograd formula is written in C++ so that a call that needs no gradient pays nothing for
// it (a Python autograd kernel costs about 10 us per call, a sixth of a batch-1 forward). The
// backward keeps the inputs (only when the weight needs a gradient: the weight gradient is the
// only reader), the weight, and either the pre-activation (gelu, gelu_tanh, silu) or the output
// (relu, sigmoid, tanh).
#include "ops/concat_linear/concat_linear.h"

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

#include "engine/activation_names.h"
#include "engine/autocast.h"
#include "engine/grad_recording.h"

namespace mmfast {

ConcatLinearShape check_concat_linear_args(at::TensorList inputs, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias) {
  const SegmentsShape segments = check_segments(inputs, "inputs", kConcatLinearLimits);
  const at::Tensor& first = inputs[0];
  ConcatLinearShape shape;
  shape.rows = segments.rows;
  shape.in_features = segments.in_features;
  shape.segment_sizes = segments.segment_sizes;
  TORCH_CHECK_VALUE(shape.in_features >= 1, "inputs: the feature dims sum to 0");
  TORCH_CHECK_TYPE(weight.scalar_type() == first.scalar_type(), "weight: expected dtype ",
                   dtype_name(first.scalar_type()), " like the inputs, got ", dtype_name(weight.scalar_type()));
  TORCH_CHECK_VALUE(weight.device() == first.device(), "weight: expected device ", first.device(),
                    " like the inputs, got ", weight.device());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == shape.in_features,
                    "weight: expected shape [out_features, ", shape.in_features,
                    "] (the inputs' feature dims sum to ", shape.in_features, "), got ", weight.sizes());
  shape.out_features = weight.size(0);
  if (bias.has_value() && bias->defined()) {
    check_parameter(*bias, "bias", first, {shape.out_features});
  }
  shape.output_sizes = segments.leading_sizes;
  shape.output_sizes.push_back(shape.out_features);
  return shape;
}

ConcatLinearBackwardShape check_concat_linear_backward_args(const at::Tensor& grad_output, at::TensorList inputs,
                                                            const at::Tensor& weight, const at::Tensor& saved,
                                                            c10::string_view activation, bool weight_grad) {
  const Activation act = parse_activation(activation);
  TORCH_CHECK_VALUE(weight.dim() == 2, "weight: expected a 2-D tensor, got ", weight.sizes());
  ConcatLinearBackwardShape shape;
  shape.out_features = weight.size(0);
  shape.in_features = weight.size(1);
  TORCH_CHECK_VALUE(grad_output.dim() >= 1 && grad_output.size(-1) == shape.out_features,
                    "grad_output: expected shape [*, ", shape.out_features, "], got ", grad_output.sizes());
  if (weight_grad) {
    check_concat_linear_args(inputs, weight, std::nullopt);
  }
  const bool needs_saved = saved_for_backward(act) != SavedForBackward::kNothing;
  TORCH_CHECK_VALUE(!needs_saved || saved.sizes() == grad_output.sizes(), "saved: expected shape ",
                    grad_output.sizes(), " for activation '", std::string(activation),
                    "' (was the forward run with save_for_backward=False?), got ", saved.sizes());
  shape.input_sizes.assign(grad_output.sizes().begin(), grad_output.sizes().end());
  shape.input_sizes.back() = shape.in_features;
  shape.rows = shape.out_features == 0 ? 0 : grad_output.numel() / shape.out_features;
  return shape;
}


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
    // Gradients of outputs that never reached the loss stay undefined: materialising them would
    // allocate and zero a tensor the size of the output (the preactivation, the gates) per step.
    ctx->set_materialize_grads(false);
    auto [output, saved] = forward_op(inputs, weight, bias, activation, save);
    const SavedForBackward kind = saved_for_backward(parse_activation(activation));
    std::vector<int64_t> segment_sizes;
    for (const auto& x : inputs) {
      // The feature dim only: size(-1) would read every dim as an integer, which under
      // torch.export / dynamic shapes fixes the batch to the traced one.
      segment_sizes.push_back(x.sym_size(-1).guard_int(__FILE__, __LINE__));
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


using Signature = at::Tensor(at::TensorList, const at::Tensor&, const std::optional<at::Tensor>&, c10::string_view);

at::Tensor concat_linear_composite(at::TensorList inputs, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, c10::string_view activation) {
  const bool save = autograd_records(inputs, weight, bias);
  return std::get<0>(forward_op(inputs, weight, bias, activation, save));
}

// Autocast: cast like F.linear does (to the autocast dtype for this device), then run the op
// with autocast excluded.
template <c10::DeviceType device_type>
at::Tensor concat_linear_autocast(at::TensorList inputs, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, c10::string_view activation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mmfast::concat_linear", "").typed<Signature>();
  return op.call(autocast_all<device_type>(inputs), autocast_one<device_type>(weight),
                 autocast_optional<device_type>(bias), activation);
}

const RegisterInputLimits register_limits("concat_linear", kConcatLinearLimits);

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmfast, m) {
  m.def("concat_linear(Tensor[] inputs, Tensor weight, Tensor? bias=None, str activation=\"none\") -> Tensor");
  m.def(
      "concat_linear_forward(Tensor[] inputs, Tensor weight, Tensor? bias, str activation, "
      "bool save_for_backward) -> (Tensor output, Tensor saved)");
  m.def(
      "concat_linear_backward(Tensor grad_output, Tensor[] inputs, Tensor weight, Tensor saved, "
      "str activation, bool[3] output_mask) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(mmfast, CompositeImplicitAutograd, m) {
  m.impl("concat_linear", &concat_linear_composite);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCPU, m) {
  m.impl("concat_linear", &concat_linear_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCUDA, m) {
  m.impl("concat_linear", &concat_linear_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  m.impl("concat_linear_forward", &concat_linear_forward_autograd);
  // Differentiating the backward (create_graph=True, then backward through the gradients)
  // raises "derivative for mmfast::concat_linear_backward is not implemented" instead of going silently wrong.
  m.impl("concat_linear_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mmfast
