// Schemas of the mmfast ops, the composite public entry point and the autocast rules.
//
// `concat_linear` is what users call; it decides whether the backward will need the
// pre-activation and forwards to `concat_linear_forward`, which has the device kernels and the
// autograd formula (registered from Python). The backward is an op of its own so that
// torch.compile sees it as one opaque node.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <Python.h>

#include <vector>

#include "grad_recording.h"

namespace mmfast {
namespace {

std::tuple<at::Tensor, at::Tensor> call_concat_linear_forward(at::TensorList inputs, const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              c10::string_view activation, bool save) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::concat_linear_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(at::TensorList, const at::Tensor&,
                                                                 const std::optional<at::Tensor>&,
                                                                 c10::string_view, bool)>();
  return op.call(inputs, weight, bias, activation, save);
}

at::Tensor concat_linear_composite(at::TensorList inputs, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, c10::string_view activation) {
  const bool save = autograd_records(inputs, weight, bias);
  return std::get<0>(call_concat_linear_forward(inputs, weight, bias, activation, save));
}

// Autocast: cast like F.linear does (to the autocast dtype for this device), then run the op
// with autocast excluded.
template <c10::DeviceType device_type>
at::Tensor concat_linear_autocast(at::TensorList inputs, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, c10::string_view activation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto to_type = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  std::vector<at::Tensor> cast_inputs;
  cast_inputs.reserve(inputs.size());
  for (const auto& x : inputs) {
    cast_inputs.push_back(at::autocast::cached_cast(to_type, x, device_type));
  }
  std::optional<at::Tensor> cast_bias;
  if (bias.has_value() && bias->defined()) {
    cast_bias = at::autocast::cached_cast(to_type, *bias, device_type);
  }
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::concat_linear", "")
                       .typed<at::Tensor(at::TensorList, const at::Tensor&, const std::optional<at::Tensor>&,
                                         c10::string_view)>();
  return op.call(cast_inputs, at::autocast::cached_cast(to_type, weight, device_type), cast_bias, activation);
}

}  // namespace

TORCH_LIBRARY(mmfast, m) {
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

}  // namespace mmfast

// The extension is loaded as the Python module `mmfast._C`; its only job is to register the ops.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
