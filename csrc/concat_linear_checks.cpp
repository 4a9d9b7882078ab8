#include "concat_linear_checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <string>

#include "activation_names.h"

namespace mmfast {

std::string dtype_name(at::ScalarType type) { return "torch." + std::string(c10::getDtypeNames(type).first); }

SegmentsShape check_segments(at::TensorList inputs, const char* argument, int64_t min_count, int64_t max_count) {
  const auto count = static_cast<int64_t>(inputs.size());
  TORCH_CHECK_VALUE(count >= min_count && count <= max_count, argument, ": expected ", min_count, " to ",
                    max_count, " tensors, got ", count);
  const at::Tensor& first = inputs[0];
  TORCH_CHECK_TYPE(at::isFloatingType(first.scalar_type()), argument,
                   "[0]: expected a floating-point tensor, got ", dtype_name(first.scalar_type()));
  SegmentsShape shape;
  for (int64_t i = 0; i < count; ++i) {
    const at::Tensor& x = inputs[i];
    TORCH_CHECK_VALUE(x.dim() >= 1, argument, "[", i, "]: expected a tensor of shape [*, D], got a 0-d tensor");
    TORCH_CHECK_TYPE(x.scalar_type() == first.scalar_type(), argument, "[", i, "]: expected dtype ",
                     dtype_name(first.scalar_type()), " like ", argument, "[0], got ", dtype_name(x.scalar_type()));
    TORCH_CHECK_VALUE(x.device() == first.device(), argument, "[", i, "]: expected device ", first.device(),
                      " like ", argument, "[0], got ", x.device());
    TORCH_CHECK_VALUE(x.sizes().slice(0, x.dim() - 1) == first.sizes().slice(0, first.dim() - 1), argument,
                      "[", i, "]: leading dims ", x.sizes().slice(0, x.dim() - 1), " differ from ", argument,
                      "[0]'s ", first.sizes().slice(0, first.dim() - 1));
    shape.segment_sizes.push_back(x.size(-1));
    shape.in_features += x.size(-1);
  }
  shape.rows = 1;
  for (int64_t d = 0; d < first.dim() - 1; ++d) {
    shape.rows *= first.size(d);
    shape.leading_sizes.push_back(first.size(d));
  }
  return shape;
}

void check_parameter(const at::Tensor& tensor, const std::string& argument, const at::Tensor& like,
                     at::IntArrayRef sizes) {
  TORCH_CHECK_TYPE(tensor.scalar_type() == like.scalar_type(), argument, ": expected dtype ",
                   dtype_name(like.scalar_type()), " like the inputs, got ", dtype_name(tensor.scalar_type()));
  TORCH_CHECK_VALUE(tensor.device() == like.device(), argument, ": expected device ", like.device(),
                    " like the inputs, got ", tensor.device());
  TORCH_CHECK_VALUE(tensor.sizes() == sizes, argument, ": expected shape ", sizes, ", got ", tensor.sizes());
}

ConcatLinearShape check_concat_linear_args(at::TensorList inputs, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias) {
  const SegmentsShape segments = check_segments(inputs, "inputs", 1, kMaxConcatInputs);
  const at::Tensor& first = inputs[0];
  ConcatLinearShape shape;
  shape.rows = segments.rows;
  shape.in_features = segments.in_features;
  shape.segment_sizes = segments.segment_sizes;
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
    check_parameter(*bias, "bias", first, {shape.out_features});
  }
  shape.output_sizes = segments.leading_sizes;
  shape.output_sizes.push_back(shape.out_features);
  return shape;
}

ConcatLinearBackwardShape check_concat_linear_backward_args(const at::Tensor& grad_output, at::TensorList inputs,
                                                            const at::Tensor& weight, const at::Tensor& saved,
                                                            c10::string_view activation, bool weight_grad) {
  const Activation act = parse_activation(activation);
  TORCH_CHECK_VALUE(weight.dim() == 2, "weight: expected a 2-D tensor, got ", weight.sizes());
  ConcatLinearBackwardShape shape;
  shape.out_features = weight.size(0);
  shape.in_features = weight.size(1);
  TORCH_CHECK_VALUE(grad_output.dim() >= 1 && grad_output.size(-1) == shape.out_features,
                    "grad_output: expected shape [*, ", shape.out_features, "], got ", grad_output.sizes());
  if (weight_grad) {
    check_concat_linear_args(inputs, weight, std::nullopt);
  }
  const bool needs_saved = saved_for_backward(act) != SavedForBackward::kNothing;
  TORCH_CHECK_VALUE(!needs_saved || saved.sizes() == grad_output.sizes(), "saved: expected shape ",
                    grad_output.sizes(), " for activation '", std::string(activation),
                    "' (was the forward run with save_for_backward=False?), got ", saved.sizes());
  shape.input_sizes.assign(grad_output.sizes().begin(), grad_output.sizes().end());
  shape.input_sizes.back() = shape.in_features;
  shape.rows = shape.out_features == 0 ? 0 : grad_output.numel() / shape.out_features;
  return shape;
}

}  // namespace mmfast
