// film: feature-wise linear modulation, features [B, C, *spatial] * (1 + gamma) + beta with
// (gamma, beta) = split(condition @ weight.T + bias) (definition: mmfast/ops/film.py). This file
// holds the op whole but for its kernels: the schemas, the argument checks, the composite entry
// point, the autocast rule and the autograd formula, the only one: the CPU kernel (film_cpu.cpp) and
// the Triton kernels (mmfast/triton/film.py, registered from Python for CUDA, and for every device
// with MMFAST_BACKEND=triton) share it.
//
// The forward's second output is the modulation [B, 2C] (gamma, then beta): B x 2C numbers, all
// the backward needs besides the inputs and the weight. The backward is an op of its own so that
// torch.compile sees it as one node.
#include "ops/film/film.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "engine/autocast.h"
#include "engine/grad_recording.h"

namespace mmfast {

FilmShape check_film_args(const at::Tensor& features, const at::Tensor& condition, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_TYPE(at::isFloatingType(features.scalar_type()), "features: expected a floating-point tensor, got ",
                   dtype_name(features.scalar_type()));
  TORCH_CHECK_VALUE(features.dim() >= 2, "features: expected a tensor [B, C, *spatial], got shape ",
                    features.sizes());
  FilmShape shape;
  shape.batch = features.size(0);
  shape.channels = features.size(1);
  shape.spatial = 1;
  for (int64_t d = 2; d < features.dim(); ++d) {
    shape.spatial *= features.size(d);
  }
  TORCH_CHECK_VALUE(condition.dim() == 2 && condition.size(0) == shape.batch, "condition: expected shape [",
                    shape.batch, ", K] (one condition per sample of features), got ", condition.sizes());
  shape.cond_dim = condition.size(1);
  check_parameter(condition, "condition", features, condition.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == 2 * shape.channels && weight.size(1) == shape.cond_dim,
                    "weight: expected shape [", 2 * shape.channels, ", ", shape.cond_dim,
                    "] ([2C, K]: gamma's rows, then beta's), got ", weight.sizes());
  check_parameter(weight, "weight", features, weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_parameter(*bias, "bias", features, {2 * shape.channels});
  }
  return shape;
}

namespace {

// [0, 2, ..., dim - 1, 1]: the dims of [B, C, *spatial] in channels-last storage order.
std::vector<int64_t> channels_last_order(int64_t dim) {
  std::vector<int64_t> order{0};
  for (int64_t d = 2; d < dim; ++d) {
    order.push_back(d);
  }
  order.push_back(1);
  return order;
}

}  // namespace

bool film_channels_last(const at::Tensor& map) {
  return map.dim() >= 3 && !map.is_contiguous() && map.permute(channels_last_order(map.dim())).is_contiguous();
}

at::Tensor film_in_layout(const at::Tensor& map, bool channels_last) {
  if (!channels_last) {
    return map.contiguous();
  }
  return map.permute(channels_last_order(map.dim())).is_contiguous() ? map
                                                                     : film_empty_in_layout(map, true).copy_(map);
}

at::Tensor film_empty_in_layout(const at::Tensor& like, bool channels_last) {
  if (!channels_last) {
    return at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
  }
  return at::empty_permuted(like.sizes(), channels_last_order(like.dim()), like.options());
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> forward_op(const at::Tensor& features, const at::Tensor& condition,
                                              const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::film_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(features, condition, weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_op(const at::Tensor& grad_output,
                                                                       const at::Tensor& features,
                                                                       const at::Tensor& condition,
                                                                       const at::Tensor& weight,
                                                                       const at::Tensor& modulation,
                                                                       std::array<bool, 4> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmfast::film_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, std::array<bool, 4>)>();
  return call_backward_op([&] { return op.call(grad_output, features, condition, weight, modulation, mask); });
}

class FilmFunction : public torch::autograd::Function<FilmFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& features, const at::Tensor& condition,
                               const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Gradients of outputs that never reached the loss stay undefined: materialising them would
    // allocate and zero a tensor the size of the output (the preactivation, the gates) per step.
    ctx->set_materialize_grads(false);
    auto [output, modulation] = forward_op(features, condition, weight, bias);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    // The feature map is read only for gamma's gradient, the condition only for the weight's.
    const bool gamma_grad = condition.requires_grad() || weight.requires_grad() ||
                            (bias.has_value() && bias->defined() && bias->requires_grad());
    ctx->save_for_backward({gamma_grad ? features : at::Tensor(), weight.requires_grad() ? condition : at::Tensor(),
                            weight, modulation});
    ctx->mark_non_differentiable({modulation});
    return {output, modulation};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // One gradient per forward argument: features, condition, weight, bias.
    variable_list result(4);
    const at::Tensor& grad_output = grads[0];
    if (!grad_output.defined()) {
      return result;
    }
    const std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                      has_bias && ctx->needs_input_grad(3)};
    const auto empty = at::empty({0}, grad_output.options());
    const at::Tensor features = saved[0].defined() ? saved[0] : empty;
    const at::Tensor condition = saved[1].defined() ? saved[1] : empty;
    auto [grad_features, grad_condition, grad_weight, grad_bias] =
        backward_op(grad_output, features, condition, saved[2], saved[3], mask);
    for (int i = 0; i < 4; ++i) {
      if (mask[i]) {
        result[i] = i == 0 ? grad_features : i == 1 ? grad_condition : i == 2 ? grad_weight : grad_bias;
      }
    }
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> film_forward_autograd(const at::Tensor& features, const at::Tensor& condition,
                                                         const at::Tensor& weight,
                                                         const std::optional<at::Tensor>& bias) {
  if (!autograd_records(features, condition, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(features, condition, weight, bias);
  }
  auto outputs = FilmFunction::apply(features, condition, weight, bias);
  return {outputs[0], outputs[1]};
}

using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&);

// The entry point checks the arguments before any kernel runs, whichever device's kernel (C++ or
// Triton) the forward then reaches.
at::Tensor film_composite(const at::Tensor& features, const at::Tensor& condition, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias) {
  if (!has_symbolic_sizes({features, condition})) {
    check_film_args(features, condition, weight, bias);
  }
  return std::get<0>(forward_op(features, condition, weight, bias));
}

template <c10::DeviceType device_type>
at::Tensor film_autocast(const at::Tensor& features, const at::Tensor& condition, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mmfast::film", "").typed<Signature>();
  return op.call(autocast_one<device_type>(features), autocast_one<device_type>(condition),
                 autocast_one<device_type>(weight), autocast_optional<device_type>(bias));
}

const RegisterInputLimits register_limits("film", kFilmLimits);

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmfast, m) {
  m.def("film(Tensor features, Tensor condition, Tensor weight, Tensor? bias=None) -> Tensor");
  m.def(
      "film_forward(Tensor features, Tensor condition, Tensor weight, Tensor? bias) -> "
      "(Tensor output, Tensor modulation)");
  m.def(
      "film_backward(Tensor grad_output, Tensor features, Tensor condition, Tensor weight, Tensor modulation, "
      "bool[4] output_mask) -> (Tensor grad_features, Tensor grad_condition, Tensor grad_weight, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(mmfast, CompositeImplicitAutograd, m) {
  m.impl("film", &film_composite);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCPU, m) {
  m.impl("film", &film_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(mmfast, AutocastCUDA, m) {
  m.impl("film", &film_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(mmfast, Autograd, m) {
  m.impl("film_forward", &film_forward_autograd);
  // Differentiating the backward raises "derivative for mmfast::film_backward is not implemented"
  // instead of going silently wrong.
  m.impl("film_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mmfast
