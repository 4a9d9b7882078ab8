// Autocast casts shared by the ops' Autocast kernels: the fused ops are GEMM-bound like F.linear,
// so under autocast they run in the autocast dtype of the device, like it.
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace mmfast {

template <c10::DeviceType device_type>
at::Tensor autocast_one(const at::Tensor& tensor) {
  const auto to_type = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  return at::autocast::cached_cast(to_type, tensor, device_type);
}

template <c10::DeviceType device_type>
std::vector<at::Tensor> autocast_all(at::TensorList tensors) {
  std::vector<at::Tensor> cast;
  cast.reserve(tensors.size());
  for (const auto& t : tensors) {
    cast.push_back(autocast_one<device_type>(t));
  }
  return cast;
}

template <c10::DeviceType device_type>
std::optional<at::Tensor> autocast_optional(const std::optional<at::Tensor>& tensor) {
  if (!tensor.has_value() || !tensor->defined()) {
    return tensor;
  }
  return autocast_one<device_type>(*tensor);
}

}  // namespace mmfast
