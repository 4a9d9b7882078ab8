// gated_fusion's argument checks and problem sizes, shared by its schema file and its CPU kernel
// (definition: mmfast/ops/gated_fusion.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/checks.h"

namespace mmfast {

constexpr InputLimits kGatedFusionLimits{2, kMaxSegments};

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

}  // namespace mmfast
