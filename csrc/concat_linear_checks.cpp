#include "concat_linear_checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <string>

namespace mmfast {

std::string dtype_name(at::ScalarType type) { return "torch." + std::string(c10::getDtypeNames(type).first); }

ConcatLinearShape check_concat_linear_args(at::TensorList inputs, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias) {
  const auto count = static_cast<int64_t>(inputs.size());
  TORCH_CHECK_VALUE(count >= 1 && count <= kMaxConcatInputs, "inputs: expected 1 to ",
                    kMaxConcatInputs, " tensors, got ", count);
  const at::Tensor& first = inputs[0];
  TORCH_CHECK_TYPE(at::isFloatingType(first.scalar_type()),
                   "inputs[0]: expected a floating-point tensor, got ", dtype_name(first.scalar_type()));
  ConcatLinearShape shape;
  for (int64_t i = 0; i < count; ++i) {
    const at::Tensor& x = inputs[i];
    TORCH_CHECK_VALUE(x.dim() >= 1, "inputs[", i, "]: expected a tensor of shape [*, D], got a 0-d tensor");
    TORCH_CHECK_TYPE(x.scalar_type() == first.scalar_type(), "inputs[", i, "]: expected dtype ",
                     dtype_name(first.scalar_type()), " like inputs[0], got ", dtype_name(x.scalar_type()));
    TORCH_CHECK_VALUE(x.device() == first.device(), "inputs[", i, "]: expected device ", first.device(),
                      " like inputs[0], got ", x.device());
    TORCH_CHECK_VALUE(x.sizes().slice(0, x.dim() - 1) == first.sizes().slice(0, first.dim() - 1),
                      "inputs[", i, "]: leading dims ", x.sizes().slice(0, x.dim() - 1),
                      " differ from inputs[0]'s ", first.sizes().slice(0, first.dim() - 1));
    shape.segment_sizes.push_back(x.size(-1));
    shape.in_features += x.size(-1);
  }
  TORCH_CHECK_VALUE(shape.in_features >= 1, "inputs: the feature dims sum to 0");
  TORCH_CHECK_TYPE(weight.scalar_type() == first.scalar_type(), "weight: expected dtype ",
                   dtype_name(first.scalar_type()), " like the inputs, got ", dtype_name(weight.scalar_type()));
  TORCH_CHECK_VALUE(weight.device() == first.device(), "weight: expected device ", first.device(),
                    " like the inputs, got ", weight.device());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == shape.in_features,
                    "weight: expected shape [out_features, ", shape.in_features,
                    "] (the inputs' feature dims sum to ", shape.in_features, "), got ", weight.sizes());
  shape.out_features = weight.size(0);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_TYPE(bias->scalar_type() == first.scalar_type(), "bias: expected dtype ",
                     dtype_name(first.scalar_type()), " like the inputs, got ", dtype_name(bias->scalar_type()));
    TORCH_CHECK_VALUE(bias->device() == first.device(), "bias: expected device ", first.device(),
                      " like the inputs, got ", bias->device());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == shape.out_features,
                      "bias: expected shape [", shape.out_features, "], got ", bias->sizes());
  }
  shape.rows = 1;
  for (int64_t d = 0; d < first.dim() - 1; ++d) {
    shape.rows *= first.size(d);
    shape.output_sizes.push_back(first.size(d));
  }
  shape.output_sizes.push_back(shape.out_features);
  return shape;
}

}  // namespace mmfast
