// concat_linear's argument checks and problem sizes, shared by its CPU and CUDA kernels
// (definition: mmfast/ops/concat_linear.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/checks.h"

namespace mmfast {

constexpr InputLimits kConcatLinearLimits{1, kMaxSegments};

// Problem sizes of one concat_linear call: rows = product of the leading dims.
struct ConcatLinearShape {
  int64_t rows = 0;
  int64_t in_features = 0;  // sum of the segments' feature dims (K)
  int64_t out_features = 0;  // N
  std::vector<int64_t> segment_sizes;
  std::vector<int64_t> output_sizes;  // leading dims + [N]
};

// Raises a ValueError/TypeError naming the offending argument; returns the problem sizes.
ConcatLinearShape check_concat_linear_args(at::TensorList inputs, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias);

// Sizes of one concat_linear backward call.
struct ConcatLinearBackwardShape {
  int64_t rows = 0;
  int64_t in_features = 0;
  int64_t out_features = 0;
  std::vector<int64_t> input_sizes;  // leading dims + [in_features]: the gathered input gradient
};

// Checks the backward's arguments (the inputs only when the weight gradient reads them, the saved
// tensor only when `activation` needs one), naming the offending argument.
ConcatLinearBackwardShape check_concat_linear_backward_args(const at::Tensor& grad_output, at::TensorList inputs,
                                                            const at::Tensor& weight, const at::Tensor& saved,
                                                            c10::string_view activation, bool weight_grad);

}  // namespace mmfast
