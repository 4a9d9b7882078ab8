// Whether autograd records a call: grad mode is on and some argument requires a gradient.
//
// The autograd kernels skip torch::autograd::Function for a call it would not record: its
// context, saved data (string-keyed) and node cost microseconds, which matter at batch 1 in
// inference.
#pragma once

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

}  // namespace mmfast
