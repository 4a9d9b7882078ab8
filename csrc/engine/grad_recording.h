// Whether autograd records a call: reverse mode (grad mode on and some argument requires a
// gradient) or forward mode (some argument carries a tangent).
//
// The autograd kernels skip torch::autograd::Function for a call it would not record: its
// context, saved data (string-keyed) and node cost microseconds, which matter at batch 1 in
// inference.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>

#include <optional>

namespace mmfast {

template <typename Predicate>
bool any_tensor(const Predicate& predicate, const at::Tensor& tensor) {
  return tensor.defined() && predicate(tensor);
}

template <typename Predicate>
bool any_tensor(const Predicate& predicate, const std::optional<at::Tensor>& tensor) {
  return tensor.has_value() && any_tensor(predicate, *tensor);
}

template <typename Predicate>
bool any_tensor(const Predicate& predicate, at::TensorList tensors) {
  for (const auto& tensor : tensors) {
    if (any_tensor(predicate, tensor)) {
      return true;
    }
  }
  return false;
}

template <typename... Args>
bool autograd_records(const Args&... args) {
  const auto requires_grad = [](const at::Tensor& tensor) { return tensor.requires_grad(); };
  // Forward-mode AD (dual tensors, torch.func.jvp) runs whatever the grad mode, and its outermost
  // level is 0. The autograd Functions reject it with a clear error; skipping them would silently
  // drop the tangents.
  const auto has_tangent = [](const at::Tensor& tensor) { return tensor._fw_grad(/*level=*/0).defined(); };
  return (c10::GradMode::is_enabled() && (any_tensor(requires_grad, args) || ...)) ||
         (any_tensor(has_tangent, args) || ...);
}

// Runs `call` (a dispatcher call of a backward op) past the autograd keys when grad mode is off,
// as it is in a backward pass without create_graph: autograd would record nothing, and its boxed
// fallback for ops without a derivative costs microseconds per call. With grad mode on, the call
// goes through that fallback, which makes differentiating the backward a clear error.
template <typename Call>
decltype(auto) call_backward_op(Call&& call) {
  if (c10::GradMode::is_enabled()) {
    return call();
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return call();
}

}  // namespace mmfast
