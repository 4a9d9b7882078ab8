// attention_fusion: attention over modalities, torchmultimodal's AttentionFusionModule
// (definition: mmfast/ops/attention_fusion.py). This file holds the op whole but for its
// kernels: the schemas, the argument checks, the composite entry point, the autocast rule and the
// autograd formula, the only one: the CPU kernel (attention_fusion_cpu.cpp) and the Triton kernels
// (mmfast/triton/attention_fusion.py, registered from Python for CUDA, and for every device with
// MMFAST_BACKEND=triton) share it. The backward is an op of its own so that torch.compile sees it
// as one node.
//
// The autograd formula of mmfast::attention_fusion_forward, for every device. Both outputs are
// differentiable (the attention weights are returned to users on request). It keeps the inputs,
// the parameters and the weights; mmfast::attention_fusion_backward computes the gradients.
#include "ops/attention_fusion/attention_fusion.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "engine/grad_recording.h"

namespace mmfast {

AttentionFusionShape check_attention_fusion_args(at::TensorList inputs, at::TensorList proj_weights,
                                                 at::TensorList proj_biases, const at::Tensor& score_weight,
                                                 const std::optional<at::Tensor>& score_bias) {
  const SegmentsShape segments = check_segments(inputs, "inputs", kAttentionFusionLimits);
  AttentionFusionShape shape;
  shape.count = static_cast<int64_t>(inputs.size());
  shape.rows = segments.rows;
  shape.in_features = segments.in_features;
  shape.segment_sizes = segments.segment_sizes;
  const at::Tensor& first = inputs[0];
  TORCH_CHECK_VALUE(static_cast<int64_t>(proj_weights.size()) == shape.count, "proj_weights: expected ",
                    shape.count, " tensors (one per input), got ", proj_weights.size());
  TORCH_CHECK_VALUE(proj_weights[0].dim() == 2, "proj_weights[0]: expected shape [D_out, ",
                    shape.segment_sizes[0], "], got ", proj_weights[0].sizes());
  shape.out_dim = proj_weights[0].size(0);
  for (int64_t m = 0; m < shape.count; ++m) {
    check_parameter(proj_weights[m], "proj_weights[" + std::to_string(m) + "]", first,
                    {shape.out_dim, shape.segment_sizes[m]});
  }
  TORCH_CHECK_VALUE(proj_biases.empty() || static_cast<int64_t>(proj_biases.size()) == shape.count,
                    "proj_biases: expected None or ", shape.count, " tensors (one per input), got ",
                    proj_biases.size());
  for (size_t m = 0; m < proj_biases.size(); ++m) {
    check_parameter(proj_biases[m], "proj_biases[" + std::to_string(m) + "]", first, {shape.out_dim});
  }
  check_parameter(score_weight, "score_weight", first, {shape.count, shape.in_features});
  if (score_bias.has_value() && score_bias->defined()) {
    check_parameter(*score_bias, "score_bias", first, {shape.count});
  }
  shape.output_sizes = segments.leading_sizes;
  shape.output_sizes.push_back(shape.out_dim);
  shape.weights_sizes = segments.leading_sizes;
  shape.weights_sizes.push_back(shape.count);
  return shape;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using BackwardResult =
    std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor>;

std::tuple<at::Tensor, at::Tensor> forward_op(at::TensorList inputs, at::TensorList proj_weights,
                                              at::TensorList proj_biases, const at::Tensor& score_weight,
                                              const std::optional<at::Tensor>& score_bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::attention_fusion_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(at::TensorList, at::TensorList, at::TensorList,
                                                                 const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(inputs, proj_weights, proj_biases, score_weight, score_bias);
}

BackwardResult backward_op(const at::Tensor& grad_output, const std::optional<at::Tensor>& grad_weights,
                           at::TensorList inputs, at::TensorList proj_weights, at::TensorList proj_biases,
                           const at::Tensor& score_weight, const at::Tensor& weights, std::array<bool, 5> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::attention_fusion_backward", "")
                       .typed<BackwardResult(const at::Tensor&, const std::optional<at::Tensor>&, at::TensorList,
                                             at::TensorList, at::TensorList, const at::Tensor&, const at::Tensor&,
                                             std::array<bool, 5>)>();
  return call_backward_op([&] {
    return op.call(grad_output, grad_weights, inputs, proj_weights, proj_biases, score_weight, weights, mask);
  });
}

class AttentionFusionFunction : public torch::autograd::Function<AttentionFusionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, at::TensorList proj_weights,
                               at::TensorList proj_biases, const at::Tensor& score_weight,
                               const std::optional<at::Tensor>& score_bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Gradients of outputs that never reached the loss stay undefined: materialising them would
    // allocate and zero a tensor the size of the output (the preactivation, the gates) per step.
    ctx->set_materialize_grads(false);
    auto [output, weights] = forward_op(inputs, proj_weights, proj_biases, score_weight, score_bias);
    const auto count = static_cast<int64_t>(inputs.size());
    ctx->saved_data["count"] = count;
    ctx->saved_data["bias_count"] = static_cast<int64_t>(proj_biases.size());
    ctx->saved_data["has_score_bias"] = score_bias.has_value() && score_bias->defined();
    variable_list to_save = {score_weight, weights};
    to_save.insert(to_save.end(), inputs.begin(), inputs.end());
    to_save.insert(to_save.end(), proj_weights.begin(), proj_weights.end());
    to_save.insert(to_save.end(), proj_biases.begin(), proj_biases.end());
    ctx->save_for_backward(to_save);
    return {output, weights};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const int64_t count = ctx->saved_data["count"].toInt();
    const int64_t bias_count = ctx->saved_data["bias_count"].toInt();
    const bool has_score_bias = ctx->saved_data["has_score_bias"].toBool();
    // One gradient per forward argument: inputs, proj_weights, proj_biases, score_weight, score_bias.
    const int64_t score_index = 2 * count + bias_count;
    variable_list result(score_index + 2);
    const at::Tensor& grad_output = grads[0];
    const at::Tensor& grad_weights = grads[1];
    if (!grad_output.defined() && !grad_weights.defined()) {
      return result;
    }
    auto any_needed = [&](int64_t begin, int64_t end) {
      bool needed = false;
      for (int64_t i = begin; i < end; ++i) {
        needed = needed || ctx->needs_input_grad(i);
      }
      return needed;
    };
    const std::array<bool, 5> mask = {any_needed(0, count), any_needed(count, 2 * count),
                                      any_needed(2 * count, score_index), ctx->needs_input_grad(score_index),
                                      has_score_bias && ctx->needs_input_grad(score_index + 1)};
    const at::Tensor& score_weight = saved[0];
    const at::Tensor& weights = saved[1];
    const std::vector<at::Tensor> inputs(saved.begin() + 2, saved.begin() + 2 + count);
    const std::vector<at::Tensor> proj_weights(saved.begin() + 2 + count, saved.begin() + 2 + 2 * count);
    const std::vector<at::Tensor> proj_biases(saved.begin() + 2 + 2 * count, saved.end());
    // Symbolic sizes: reading them as integers would fix the batch under torch.export.
    std::vector<c10::SymInt> output_sizes = weights.sym_sizes().vec();
    output_sizes.back() = proj_weights[0].sym_size(0);
    // Only the weights reached the loss: the output's gradient is zero.
    const at::Tensor dout =
        grad_output.defined() ? grad_output : at::zeros_symint(output_sizes, weights.options());
    auto [grad_input, grad_proj_weights, grad_proj_biases, grad_score_weight, grad_score_bias] =
        backward_op(dout, grad_weights.defined() ? std::optional<at::Tensor>(grad_weights) : std::nullopt, inputs,
                    proj_weights, proj_biases, score_weight, weights, mask);
    if (mask[0]) {
      int64_t offset = 0;
      for (int64_t i = 0; i < count; ++i) {
        const int64_t width = inputs[i].sym_size(-1).guard_int(__FILE__, __LINE__);  // the feature dim only
        result[i] = grad_input.narrow(-1, offset, width);
        offset += width;
      }
    }
    for (size_t i = 0; i < grad_proj_weights.size(); ++i) {
      result[count + static_cast<int64_t>(i)] = grad_proj_weights[i];
    }
    for (size_t i = 0; i < grad_proj_biases.size(); ++i) {
      result[2 * count + static_cast<int64_t>(i)] = grad_proj_biases[i];
    }
    if (mask[3]) {
      result[score_index] = grad_score_weight;
    }
    if (mask[4]) {
      result[score_index + 1] = grad_score_bias;
    }
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> attention_fusion_forward_autograd(at::TensorList inputs,
                                                                     at::TensorList proj_weights,
                                                                     at::TensorList proj_biases,
                                                                     const at::Tensor& score_weight,
                                                                     const std::optional<at::Tensor>& score_bias) {
  if (!autograd_records(inputs, proj_weights, proj_biases, score_weight, score_bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(inputs, proj_weights, proj_biases, score_weight, score_bias);
  }
  auto outputs = AttentionFusionFunction::apply(inputs, proj_weights, proj_biases, score_weight, score_bias);
  return {outputs[0], outputs[1]};
}


using Signature = std::tuple<at::Tensor, at::Tensor>(at::TensorList, at::TensorList, at::TensorList,
                                                     const at::Tensor&, const std::optional<at::Tensor>&);

// The entry point checks the arguments before any kernel runs, whichever device's kernel (C++ or
// Triton) the forward then reaches.
std::tuple<at::Tensor, at::Tensor> attention_fusion_composite(at::TensorList inputs, at::TensorList proj_weights,
                                                              at::TensorList proj_biases,
                                                              const at::Tensor& score_weight,
                                                              const std::optional<at::Tensor>& score_bias) {
  if (!has_symbolic_sizes(inputs)) {
    check_attention_fusion_args(inputs, proj_weights, proj_biases, score_weight, score_bias);
  }
  return forward_op(inputs, proj_weights, proj_biases, score_weight, score_bias);
}

template <c10::DeviceType device_type>
std::tuple<at::Tensor, at::Tensor> attention_fusion_autocast(at::TensorList inputs, at::TensorList proj_weights,
                                                             at::TensorList proj_biases,
                                                             const at::Tensor& score_weight,
                                                             const std::optional<at::Tensor>& score_bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mmfast::attention_fusion", "").typed<Signature>();
  return op.call(autocast_all<device_type>(inputs), autocast_all<device_type>(proj_weights),
                 autocast_all<device_type>(proj_biases), autocast_one<device_type>(score_weight),
                 autocast_optional<device_type>(score_bias));
}

const RegisterInputLimits register_limits("attention_fusion", kAttentionFusionLimits);

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmfast, m) {
  m.def(
      "attention_fusion(Tensor[] inputs, Tensor[] proj_weights, Tensor[] proj_biases, Tensor score_weight, "
      "Tensor? score_bias=None) -> (Tensor output, Tensor weights)");
  m.def(
      "attention_fusion_forward(Tensor[] inputs, Tensor[] proj_weights, Tensor[] proj_biases, "
      "Tensor score_weight, Tensor? score_bias) -> (Tensor output, Tensor weights)");
  m.def(
      "attention_fusion_backward(Tensor grad_output, Tensor? grad_weights, Tensor[] inputs, "
      "Tensor[] proj_weights, Tensor[] proj_biases, Tensor score_weight, Tensor weights, bool[5] output_mask) "
      "-> (Tensor grad_input, Tensor[] grad_proj_weights, Tensor[] grad_proj_biases, Tensor grad_score_weight, "
      "Tensor grad_score_bias)");
}

TORCH_LIBRARY_IMPL(mmfast, CompositeImplicitAutograd, m) {
  m.impl("attention_fusion", &attention_fusion_composite);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCPU, m) {
  m.impl("attention_fusion", &attention_fusion_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCUDA, m) {
  m.impl("attention_fusion", &attention_fusion_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  m.impl("attention_fusion_forward", &attention_fusion_forward_autograd);
  // Differentiating the backward (create_graph=True, then backward through the gradients)
  // raises "derivative for mmfast::attention_fusion_backward is not implemented" instead of going silently wrong.
  m.impl("attention_fusion_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mmfast
