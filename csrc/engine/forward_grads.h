// The autograd formula of ops whose forward can also return the gradients of their scalar output
// (`<op>_forward_with_grads`, the contrastive losses on the CPU): what the forward keeps and how the
// backward turns it into the gradients.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <array>
#include <cstdint>

namespace mmfast {

// In the autograd Function's forward: keeps the gradients (in the compute dtype) that the forward
// returned for the arguments in `mask` (image, text, logit_scale, logit_bias), and the features'
// dtypes the backward rounds them to.
inline void save_forward_grads(torch::autograd::AutogradContext* ctx, const at::Tensor& image, const at::Tensor& text,
                               const std::array<at::Tensor, 4>& grads, const std::array<bool, 4>& mask) {
  ctx->saved_data["image_dtype"] = static_cast<int64_t>(image.scalar_type());
  ctx->saved_data["text_dtype"] = static_cast<int64_t>(text.scalar_type());
  ctx->save_for_backward({mask[0] ? grads[0] : at::Tensor(), mask[1] ? grads[1] : at::Tensor(),
                          mask[2] ? grads[2] : at::Tensor(), mask[3] ? grads[3] : at::Tensor()});
}

// In its backward: the kept gradients times the incoming gradient `grad`, the features' rounded once
// to their dtype, into result[0..3] where autograd needs them. Their product would carry no
// derivative with respect to the inputs, so a graph of the backward (create_graph=True) is refused
// rather than built silently.
inline void scale_forward_grads(torch::autograd::AutogradContext* ctx, const torch::autograd::variable_list& saved,
                                const at::Tensor& grad, const char* op, torch::autograd::variable_list& result) {
  TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(), "derivative for mmfast::", op,
                              "_forward_with_grads is not implemented: ", op,
                              " has no second derivative (backward with create_graph=True)");
  const std::array<at::ScalarType, 2> dtypes = {static_cast<at::ScalarType>(ctx->saved_data["image_dtype"].toInt()),
                                                static_cast<at::ScalarType>(ctx->saved_data["text_dtype"].toInt())};
  for (size_t i = 0; i < 4; ++i) {
    if (saved[i].defined() && ctx->needs_input_grad(i)) {
      const at::Tensor scaled = saved[i] * grad;
      result[i] = i < 2 ? scaled.to(dtypes[i]) : scaled;
    }
  }
}

}  // namespace mmfast
