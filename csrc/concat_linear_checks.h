// Argument checks for concat_linear, shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/core/Tensor.h>

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

// Raises a ValueError/TypeError naming the offending argument; returns the problem sizes.
ConcatLinearShape check_concat_linear_args(at::TensorList inputs, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias);

}  // namespace mmfast
