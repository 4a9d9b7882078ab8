// attention_fusion's argument checks and problem sizes, shared by its schema file and its CPU kernel
// (definition: mmfast/ops/attention_fusion.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/checks.h"

namespace mmfast {

constexpr InputLimits kAttentionFusionLimits{1, kMaxSegments};

struct AttentionFusionShape {
  int64_t count = 0;  // M
  int64_t rows = 0;
  int64_t in_features = 0;  // sum of the D_m
  int64_t out_dim = 0;  // D_out
  std::vector<int64_t> segment_sizes;
  std::vector<int64_t> output_sizes;  // leading dims + [D_out]
  std::vector<int64_t> weights_sizes;  // leading dims + [M]
};

// inputs: 1..16 tensors [*, D_m]; proj_weights: one [D_out, D_m] per input; proj_biases: empty or one
// [D_out] per input; score_weight [M, sum D_m]; score_bias [M] or None.
AttentionFusionShape check_attention_fusion_args(at::TensorList inputs, at::TensorList proj_weights,
                                                 at::TensorList proj_biases, const at::Tensor& score_weight,
                                                 const std::optional<at::Tensor>& score_bias);

}  // namespace mmfast
