// siglip_loss: SigLIP's pairwise sigmoid loss without the B x B logit matrix (definition:
// mmfast/ops/siglip_loss.py). This file holds the op whole but for its kernels: the schemas, the
// composite entry point and the autograd formula, the only one (the CPU kernel is
// siglip_loss_cpu.cpp; the argument checks are shared in engine/pairwise.h).
//
// No normalization: each logit's gradient depends on that logit alone, so on the CPU the autograd
// formula runs `siglip_loss_forward_with_grads`, which forms the gradients in the forward's pass over
// the logit tiles (three GEMMs per tile, as eager code runs, instead of four with a recomputing
// backward) and keeps them, O(B * D) like the inputs, for the backward to scale by the incoming
// gradient. Elsewhere (CUDA) the forward keeps nothing beyond its inputs and `siglip_loss_backward`
// recomputes the tiles. The backward ops are ops of their own so that torch.compile sees each as one
// node.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "engine/checks.h"
#include "engine/forward_grads.h"
#include "engine/grad_recording.h"
#include "engine/pairwise.h"

namespace mmfast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    int64_t);

at::Tensor forward_op(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                      const at::Tensor& logit_bias, int64_t label_offset) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::siglip_loss_forward", "")
                       .typed<ForwardSignature>();
  return op.call(image, text, logit_scale, logit_bias, label_offset);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_op(const at::Tensor& grad, const at::Tensor& image,
                                                                       const at::Tensor& text,
                                                                       const at::Tensor& logit_scale,
                                                                       const at::Tensor& logit_bias,
                                                                       int64_t label_offset, std::array<bool, 4> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::siglip_loss_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, int64_t, std::array<bool, 4>)>();
  return call_backward_op([&] { return op.call(grad, image, text, logit_scale, logit_bias, label_offset, mask); });
}

using GradsTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

GradsTuple forward_with_grads_op(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                                 const at::Tensor& logit_bias, int64_t label_offset, std::array<bool, 4> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::siglip_loss_forward_with_grads", "")
                       .typed<GradsTuple(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         int64_t, std::array<bool, 4>)>();
  return op.call(image, text, logit_scale, logit_bias, label_offset, mask);
}

// Other devices than the CPU: the forward, then the backward for grad_loss = 1.
GradsTuple forward_with_grads_composite(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                                        const at::Tensor& logit_bias, int64_t label_offset,
                                        std::array<bool, 4> mask) {
  at::Tensor loss = forward_op(image, text, logit_scale, logit_bias, label_offset);
  auto [grad_image, grad_text, grad_scale, grad_bias] =
      backward_op(at::ones_like(loss), image, text, logit_scale, logit_bias, label_offset, mask);
  const auto compute = loss.scalar_type();
  return {loss, mask[0] ? grad_image.to(compute) : grad_image, mask[1] ? grad_text.to(compute) : grad_text,
          grad_scale, grad_bias};
}

class SiglipLossFunction : public torch::autograd::Function<SiglipLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& image, const at::Tensor& text,
                            const at::Tensor& logit_scale, const at::Tensor& logit_bias, int64_t label_offset) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->saved_data["label_offset"] = label_offset;
    const bool with_grads = image.device().is_cpu();
    ctx->saved_data["with_grads"] = with_grads;
    if (with_grads) {
      const std::array<bool, 4> mask = {image.requires_grad(), text.requires_grad(), logit_scale.requires_grad(),
                                        logit_bias.requires_grad()};
      auto [loss, grad_image, grad_text, grad_scale, grad_bias] =
          forward_with_grads_op(image, text, logit_scale, logit_bias, label_offset, mask);
      save_forward_grads(ctx, image, text, {grad_image, grad_text, grad_scale, grad_bias}, mask);
      return loss;
    }
    at::Tensor loss = forward_op(image, text, logit_scale, logit_bias, label_offset);
    ctx->save_for_backward({image, text, logit_scale, logit_bias});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    // One gradient per forward argument: image, text, logit_scale, logit_bias, label_offset.
    variable_list result(5);
    if (!grads[0].defined()) {
      return result;
    }
    if (ctx->saved_data["with_grads"].toBool()) {  // the loss's gradients, kept by the forward
      scale_forward_grads(ctx, saved, grads[0], "siglip_loss", result);
      return result;
    }
    const std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                      ctx->needs_input_grad(3)};
    auto [grad_image, grad_text, grad_scale, grad_bias] = backward_op(
        grads[0], saved[0], saved[1], saved[2], saved[3], ctx->saved_data["label_offset"].toInt(), mask);
    const std::array<at::Tensor, 4> all = {grad_image, grad_text, grad_scale, grad_bias};
    for (size_t i = 0; i < mask.size(); ++i) {
      if (mask[i]) {
        result[i] = all[i];
      }
    }
    return result;
  }
};

at::Tensor siglip_loss_forward_autograd(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                                        const at::Tensor& logit_bias, int64_t label_offset) {
  if (!autograd_records(image, text, logit_scale, logit_bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(image, text, logit_scale, logit_bias, label_offset);
  }
  return SiglipLossFunction::apply(image, text, logit_scale, logit_bias, label_offset);
}

const RegisterInputLimits register_limits("siglip_loss", {kPairwiseInputs, kPairwiseInputs});

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmfast, m) {
  m.def(
      "siglip_loss(Tensor image_features, Tensor text_features, Tensor logit_scale, Tensor logit_bias, "
      "int label_offset=0) -> Tensor");
  m.def(
      "siglip_loss_backward(Tensor grad_loss, Tensor image_features, Tensor text_features, Tensor logit_scale, "
      "Tensor logit_bias, int label_offset, bool[4] output_mask) "
      "-> (Tensor grad_image, Tensor grad_text, Tensor grad_logit_scale, Tensor grad_logit_bias)");
  m.def(
      "siglip_loss_forward(Tensor image_features, Tensor text_features, Tensor logit_scale, Tensor logit_bias, "
      "int label_offset) -> Tensor");
  m.def(
      "siglip_loss_forward_with_grads(Tensor image_features, Tensor text_features, Tensor logit_scale, "
      "Tensor logit_bias, int label_offset, bool[4] output_mask) "
      "-> (Tensor loss, Tensor grad_image, Tensor grad_text, Tensor grad_logit_scale, Tensor grad_logit_bias)");
}

TORCH_LIBRARY_IMPL(mmfast, CompositeExplicitAutograd, m) {
  m.impl("siglip_loss_forward_with_grads", &forward_with_grads_composite);
}

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  // The composite is the forward op itself here (one output): autograd and kernels on it.
  m.impl("siglip_loss_forward", &siglip_loss_forward_autograd);
  m.impl("siglip_loss_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("siglip_loss_forward_with_grads", torch::autograd::autogradNotImplementedFallback());
}

TORCH_LIBRARY_IMPL(mmfast, CompositeImplicitAutograd, m) {
  m.impl("siglip_loss", [](const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                           const at::Tensor& logit_bias, int64_t label_offset) {
    return forward_op(image, text, logit_scale, logit_bias, label_offset);
  });
}

}  // namespace mmfast
