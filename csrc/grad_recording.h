// Whether autograd records a call: grad mode is on and some argument requires a gradient.
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

inline bool requires_grad_of(const at::Tensor& tensor) { return tensor.defined() && tensor.requires_grad(); }

inline bool requires_grad_of(const std::optional<at::Tensor>& tensor) {
  return tensor.has_value() && requires_grad_of(*tensor);
}

inline bool requires_grad_of(at::TensorList tensors) {
  for (const auto& tensor : tensors) {
    if (requires_grad_of(tensor)) {
      return true;
    }
  }
  return false;
}

template <typename... Args>
bool autograd_records(const Args&... args) {
  return c10::GradMode::is_enabled() && (requires_grad_of(args) || ...);
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
