// Schemas of the modality fusion ops, their public composite entry points and autocast rules.
//
// `gated_fusion` and `attention_fusion` are what users call. They forward to `<op>_forward`, which
// has the device kernels (C++ on CPU, Triton on CUDA, registered from Python) and the autograd
// formula (C++); `<op>_backward` is an op of its own so that torch.compile sees it as one node.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

namespace mmfast {
namespace {

using GatedSignature = at::Tensor(at::TensorList, const at::Tensor&, const std::optional<at::Tensor>&);
using AttentionSignature = std::tuple<at::Tensor, at::Tensor>(at::TensorList, at::TensorList, at::TensorList,
                                                              const at::Tensor&, const std::optional<at::Tensor>&);

at::Tensor gated_fusion_composite(at::TensorList inputs, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::gated_fusion_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(at::TensorList, const at::Tensor&,
                                                                 const std::optional<at::Tensor>&)>();
  return std::get<0>(op.call(inputs, weight, bias));
}

std::tuple<at::Tensor, at::Tensor> attention_fusion_composite(at::TensorList inputs, at::TensorList proj_weights,
                                                              at::TensorList proj_biases,
                                                              const at::Tensor& score_weight,
                                                              const std::optional<at::Tensor>& score_bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::attention_fusion_forward", "")
                       .typed<AttentionSignature>();
  return op.call(inputs, proj_weights, proj_biases, score_weight, score_bias);
}

template <c10::DeviceType device_type>
std::vector<at::Tensor> cast_all(at::TensorList tensors) {
  const auto to_type = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  std::vector<at::Tensor> cast;
  cast.reserve(tensors.size());
  for (const auto& t : tensors) {
    cast.push_back(at::autocast::cached_cast(to_type, t, device_type));
  }
  return cast;
}

template <c10::DeviceType device_type>
std::optional<at::Tensor> cast_optional(const std::optional<at::Tensor>& tensor) {
  if (!tensor.has_value() || !tensor->defined()) {
    return tensor;
  }
  const auto to_type = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  return at::autocast::cached_cast(to_type, *tensor, device_type);
}

// Autocast: the fusions are GEMM-bound like F.linear, so they run in the autocast dtype like it.
template <c10::DeviceType device_type>
at::Tensor gated_fusion_autocast(at::TensorList inputs, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mmfast::gated_fusion", "").typed<GatedSignature>();
  const auto to_type = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  return op.call(cast_all<device_type>(inputs), at::autocast::cached_cast(to_type, weight, device_type),
                 cast_optional<device_type>(bias));
}

template <c10::DeviceType device_type>
std::tuple<at::Tensor, at::Tensor> attention_fusion_autocast(at::TensorList inputs, at::TensorList proj_weights,
                                                             at::TensorList proj_biases,
                                                             const at::Tensor& score_weight,
                                                             const std::optional<at::Tensor>& score_bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mmfast::attention_fusion", "").typed<AttentionSignature>();
  const auto to_type = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  return op.call(cast_all<device_type>(inputs), cast_all<device_type>(proj_weights),
                 cast_all<device_type>(proj_biases), at::autocast::cached_cast(to_type, score_weight, device_type),
                 cast_optional<device_type>(score_bias));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmfast, m) {
  m.def("gated_fusion(Tensor[] inputs, Tensor weight, Tensor? bias=None) -> Tensor");
  m.def("gated_fusion_forward(Tensor[] inputs, Tensor weight, Tensor? bias) -> (Tensor output, Tensor gates)");
  m.def(
      "gated_fusion_backward(Tensor grad_output, Tensor[] inputs, Tensor weight, Tensor gates, "
      "bool[3] output_mask) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)");
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
  m.impl("gated_fusion", &gated_fusion_composite);
  m.impl("attention_fusion", &attention_fusion_composite);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCPU, m) {
  m.impl("gated_fusion", &gated_fusion_autocast<c10::DeviceType::CPU>);
  m.impl("attention_fusion", &attention_fusion_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCUDA, m) {
  m.impl("gated_fusion", &gated_fusion_autocast<c10::DeviceType::CUDA>);
  m.impl("attention_fusion", &attention_fusion_autocast<c10::DeviceType::CUDA>);
}

}  // namespace mmfast
