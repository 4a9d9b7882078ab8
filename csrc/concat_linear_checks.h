// Argument checks for concat_linear, shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mmfast {

constexpr int64_t kMaxConcatInputs = 16;

// Problem sizes of one concat_linear call: rows = product of the leading dims.
struct ConcatLinearShape {
  int64_t rows = 0;
  int64_t in_features = 0;  // sum of the segments' feature dims (K)
  int64_t out_features = 0;  // N
  std::vector<int64_t> segment_sizes;
  std::vector<int64_t> output_sizes;  // leading dims + [N]
};

// "torch.float32" and so on, as Python users spell dtypes.
std::string dtype_name(at::ScalarType type);

// The sizes of a list of feature segments [*, D_i] sharing leading dims, dtype and device.
struct SegmentsShape {
  int64_t rows = 0;  // product of the leading dims
  int64_t in_features = 0;  // sum of the D_i
  std::vector<int64_t> segment_sizes;
  std::vector<int64_t> leading_sizes;
};

// Checks `count` (min_count..max_count) floating-point tensors of shape [*, D_i] with one dtype,
// device and leading dims; errors name `argument`[i].
SegmentsShape check_segments(at::TensorList inputs, const char* argument, int64_t min_count, int64_t max_count);

// Checks that `tensor` (called `argument`) has `like`'s dtype and device and exactly `sizes`.
void check_parameter(const at::Tensor& tensor, const std::string& argument, const at::Tensor& like,
                     at::IntArrayRef sizes);

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
