// clip_loss: CLIP's symmetric contrastive loss without the B x B logit matrix (definition:
// mmfast/ops/clip_loss.py). This file holds the op whole but for its kernels: the schemas, the
// composite entry point and the autograd formula, the only one (the CPU kernel is
// clip_loss_cpu.cpp; the argument checks are shared with the other pairwise loss in engine/pairwise.h).
//
// On the CPU the autograd formula runs `clip_loss_forward_with_grads`: for a logit matrix of one
// tile (up to 1024 x 1024) the gradients come out of the forward's own pass over it (three GEMMs in
// all, as eager code runs, instead of four with a recomputing backward), and the forward keeps
// them (O(B * D), like the inputs) for the backward to scale by the incoming gradient. Elsewhere
// (CUDA), the forward keeps beyond its inputs only the row and column log-sum-exps (O(B) numbers)
// and `clip_loss_backward` recomputes the logit tiles from the features. The backward ops are ops
// of their own so that torch.compile sees each as one node.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "engine/checks.h"
#include "engine/forward_grads.h"
#include "engine/grad_recording.h"
#include "engine/pairwise.h"

namespace mmfast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, int64_t, bool);

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_op(const at::Tensor& image, const at::Tensor& text,
                                                          const at::Tensor& logit_scale,
                                                          const std::optional<at::Tensor>& logit_bias,
                                                          int64_t label_offset, bool symmetric) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::clip_loss_forward", "")
                       .typed<ForwardSignature>();
  return op.call(image, text, logit_scale, logit_bias, label_offset, symmetric);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_op(
    const at::Tensor& grad, const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
    const std::optional<at::Tensor>& logit_bias, const at::Tensor& row_lse, const at::Tensor& col_lse,
    int64_t label_offset, bool symmetric, std::array<bool, 4> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::clip_loss_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, int64_t, bool,
                           std::array<bool, 4>)>();
  return call_backward_op([&] {
    return op.call(grad, image, text, logit_scale, logit_bias, row_lse, col_lse, label_offset, symmetric, mask);
  });
}

using WithGradsTuple =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

WithGradsTuple forward_with_grads_op(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                                     const std::optional<at::Tensor>& logit_bias, int64_t label_offset,
                                     bool symmetric, std::array<bool, 4> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::clip_loss_forward_with_grads", "")
                       .typed<WithGradsTuple(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const std::optional<at::Tensor>&, int64_t, bool, std::array<bool, 4>)>();
  return op.call(image, text, logit_scale, logit_bias, label_offset, symmetric, mask);
}

// Other devices than the CPU: the forward, then the backward for grad_loss = 1.
WithGradsTuple forward_with_grads_composite(const at::Tensor& image, const at::Tensor& text,
                                            const at::Tensor& logit_scale, const std::optional<at::Tensor>& logit_bias,
                                            int64_t label_offset, bool symmetric, std::array<bool, 4> mask) {
  auto [loss, row_lse, col_lse] = forward_op(image, text, logit_scale, logit_bias, label_offset, symmetric);
  auto [grad_image, grad_text, grad_scale, grad_bias] = backward_op(
      at::ones_like(loss), image, text, logit_scale, logit_bias, row_lse, col_lse, label_offset, symmetric, mask);
  const auto compute = loss.scalar_type();
  return {loss,
          row_lse,
          col_lse,
          mask[0] ? grad_image.to(compute) : grad_image,
          mask[1] ? grad_text.to(compute) : grad_text,
          grad_scale,
          grad_bias};
}

class ClipLossFunction : public torch::autograd::Function<ClipLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& image, const at::Tensor& text,
                               const at::Tensor& logit_scale, const std::optional<at::Tensor>& logit_bias,
                               int64_t label_offset, bool symmetric) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Gradients of outputs that never reached the loss stay undefined: materialising them would
    // allocate and zero a tensor the size of the output (the preactivation, the gates) per step.
    ctx->set_materialize_grads(false);
    const bool has_bias = logit_bias.has_value() && logit_bias->defined();
    ctx->saved_data["label_offset"] = label_offset;
    ctx->saved_data["symmetric"] = symmetric;
    ctx->saved_data["has_bias"] = has_bias;
    // The gradients from the forward's pass need a logit matrix of one tile; a larger one would
    // only move the backward's pass into the forward and keep O(B * D) gradients instead of O(B)
    // statistics. Sizes may be symbolic under torch.compile: a guard on the tile bound.
    const bool with_grads = image.device().is_cpu() && single_product_tile(image.sym_size(0), text.sym_size(0));
    ctx->saved_data["with_grads"] = with_grads;
    if (with_grads) {
      const std::array<bool, 4> mask = {image.requires_grad(), text.requires_grad(), logit_scale.requires_grad(),
                                        has_bias && logit_bias->requires_grad()};
      auto [loss, row_lse, col_lse, grad_image, grad_text, grad_scale, grad_bias] =
          forward_with_grads_op(image, text, logit_scale, logit_bias, label_offset, symmetric, mask);
      save_forward_grads(ctx, image, text, {grad_image, grad_text, grad_scale, grad_bias}, mask);
      ctx->mark_non_differentiable({row_lse, col_lse});
      return {loss, row_lse, col_lse};
    }
    auto [loss, row_lse, col_lse] = forward_op(image, text, logit_scale, logit_bias, label_offset, symmetric);
    ctx->save_for_backward({image, text, logit_scale, has_bias ? *logit_bias : at::Tensor(), row_lse, col_lse});
    ctx->mark_non_differentiable({row_lse, col_lse});
    return {loss, row_lse, col_lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // One gradient per forward argument: image, text, logit_scale, logit_bias, label_offset, symmetric.
    variable_list result(6);
    if (!grads[0].defined()) {
      return result;
    }
    if (ctx->saved_data["with_grads"].toBool()) {  // the loss's gradients, kept by the forward
      scale_forward_grads(ctx, saved, grads[0], "clip_loss", result);
      return result;
    }
    const std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                      has_bias && ctx->needs_input_grad(3)};
    const std::optional<at::Tensor> bias = has_bias ? std::optional<at::Tensor>(saved[3]) : std::nullopt;
    auto [grad_image, grad_text, grad_scale, grad_bias] =
        backward_op(grads[0], saved[0], saved[1], saved[2], bias, saved[4], saved[5],
                    ctx->saved_data["label_offset"].toInt(), ctx->saved_data["symmetric"].toBool(), mask);
    for (size_t i = 0; i < mask.size(); ++i) {
      if (mask[i]) {
        result[i] = std::array<at::Tensor, 4>{grad_image, grad_text, grad_scale, grad_bias}[i];
      }
    }
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_loss_forward_autograd(const at::Tensor& image,
                                                                          const at::Tensor& text,
                                                                          const at::Tensor& logit_scale,
                                                                          const std::optional<at::Tensor>& logit_bias,
                                                                          int64_t label_offset, bool symmetric) {
  if (!autograd_records(image, text, logit_scale, logit_bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(image, text, logit_scale, logit_bias, label_offset, symmetric);
  }
  auto outputs = ClipLossFunction::apply(image, text, logit_scale, logit_bias, label_offset, symmetric);
  return {outputs[0], outputs[1], outputs[2]};
}

at::Tensor clip_loss_composite(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                               const std::optional<at::Tensor>& logit_bias, int64_t label_offset, bool symmetric) {
  return std::get<0>(forward_op(image, text, logit_scale, logit_bias, label_offset, symmetric));
}

const RegisterInputLimits register_limits("clip_loss", {kPairwiseInputs, kPairwiseInputs});

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmfast, m) {
  m.def(
      "clip_loss(Tensor image_features, Tensor text_features, Tensor logit_scale, Tensor? logit_bias=None, "
      "int label_offset=0, bool symmetric=True) -> Tensor");
  m.def(
      "clip_loss_forward(Tensor image_features, Tensor text_features, Tensor logit_scale, Tensor? logit_bias, "
      "int label_offset, bool symmetric) -> (Tensor loss, Tensor row_lse, Tensor col_lse)");
  m.def(
      "clip_loss_backward(Tensor grad_loss, Tensor image_features, Tensor text_features, Tensor logit_scale, "
      "Tensor? logit_bias, Tensor row_lse, Tensor col_lse, int label_offset, bool symmetric, bool[4] output_mask) "
      "-> (Tensor grad_image, Tensor grad_text, Tensor grad_logit_scale, Tensor grad_logit_bias)");
  m.def(
      "clip_loss_forward_with_grads(Tensor image_features, Tensor text_features, Tensor logit_scale, "
      "Tensor? logit_bias, int label_offset, bool symmetric, bool[4] output_mask) -> (Tensor loss, Tensor row_lse, "
      "Tensor col_lse, Tensor grad_image, Tensor grad_text, Tensor grad_logit_scale, Tensor grad_logit_bias)");
}

TORCH_LIBRARY_IMPL(mmfast, CompositeExplicitAutograd, m) {
  m.impl("clip_loss_forward_with_grads", &forward_with_grads_composite);
}

TORCH_LIBRARY_IMPL(mmfast, CompositeImplicitAutograd, m) {
  m.impl("clip_loss", &clip_loss_composite);
}

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  m.impl("clip_loss_forward", &clip_loss_forward_autograd);
  // A second derivative raises "derivative for mmfast::clip_loss_backward is not implemented".
  m.impl("clip_loss_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("clip_loss_forward_with_grads", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mmfast
