#include "engine/checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <string>

namespace mmfast {

std::map<std::string, InputLimits>& input_limits_registry() {
  static std::map<std::string, InputLimits> registry;
  return registry;
}

std::string dtype_name(at::ScalarType type) { return "torch." + std::string(c10::getDtypeNames(type).first); }

SegmentsShape check_segments(at::TensorList inputs, const char* argument, InputLimits limits) {
  const auto count = static_cast<int64_t>(inputs.size());
  TORCH_CHECK_VALUE(count >= limits.min_inputs && count <= limits.max_inputs, argument, ": expected ",
                    limits.min_inputs, " to ", limits.max_inputs, " tensors, got ", count);
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

bool has_symbolic_sizes(at::TensorList inputs) {
  for (const auto& x : inputs) {
    if (x.defined() && x.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) {
      return true;
    }
  }
  return false;
}

void check_parameter(const at::Tensor& tensor, const std::string& argument, const at::Tensor& like,
                     at::IntArrayRef sizes) {
  TORCH_CHECK_TYPE(tensor.scalar_type() == like.scalar_type(), argument, ": expected dtype ",
                   dtype_name(like.scalar_type()), " like the inputs, got ", dtype_name(tensor.scalar_type()));
  TORCH_CHECK_VALUE(tensor.device() == like.device(), argument, ": expected device ", like.device(),
                    " like the inputs, got ", tensor.device());
  TORCH_CHECK_VALUE(tensor.sizes() == sizes, argument, ": expected shape ", sizes, ", got ", tensor.sizes());
}

}  // namespace mmfast
