// Argument checks for gated_fusion and attention_fusion, shared by every device's implementation.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace mmfast {

constexpr int64_t kMaxFusionInputs = 16;

struct GatedFusionShape {
  int64_t count = 0;  // M
  int64_t rows = 0;  // product of the leading dims
  int64_t dim = 0;  // D
  int64_t logits = 0;  // D for M == 2 (one sigmoid gate), M * D else (a softmax over modalities)
  std::vector<int64_t> output_sizes;  // leading dims + [D]
};

// inputs: 2..16 tensors [*, D]; weight [D, 2D] (M == 2) or [M*D, M*D]; bias [logits] or None.
GatedFusionShape check_gated_fusion_args(at::TensorList inputs, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias);

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
