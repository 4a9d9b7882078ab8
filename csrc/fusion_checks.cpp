#include "fusion_checks.h"

#include <c10/util/Exception.h>

#include <string>

#include "concat_linear_checks.h"

namespace mmfast {

GatedFusionShape check_gated_fusion_args(at::TensorList inputs, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias) {
  const SegmentsShape segments = check_segments(inputs, "inputs", 2, kMaxFusionInputs);
  GatedFusionShape shape;
  shape.count = static_cast<int64_t>(inputs.size());
  shape.rows = segments.rows;
  shape.dim = segments.segment_sizes[0];
  for (int64_t i = 1; i < shape.count; ++i) {
    TORCH_CHECK_VALUE(segments.segment_sizes[i] == shape.dim, "inputs[", i, "]: expected feature dim ", shape.dim,
                      " like inputs[0] (gated fusion blends inputs of one size), got ", segments.segment_sizes[i]);
  }
  TORCH_CHECK_VALUE(shape.dim >= 1, "inputs: expected a feature dim of at least 1, got 0");
  shape.logits = shape.count == 2 ? shape.dim : shape.count * shape.dim;
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == shape.logits && weight.size(1) == shape.count * shape.dim,
                    "weight: expected shape [", shape.logits, ", ", shape.count * shape.dim, "] for ", shape.count,
                    " inputs of dim ", shape.dim, shape.count == 2 ? " ([D, 2D] for two inputs)" : " ([M*D, M*D])",
                    ", got ", weight.sizes());
  check_parameter(weight, "weight", inputs[0], weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_parameter(*bias, "bias", inputs[0], {shape.logits});
  }
  shape.output_sizes = segments.leading_sizes;
  shape.output_sizes.push_back(shape.dim);
  return shape;
}

AttentionFusionShape check_attention_fusion_args(at::TensorList inputs, at::TensorList proj_weights,
                                                 at::TensorList proj_biases, const at::Tensor& score_weight,
                                                 const std::optional<at::Tensor>& score_bias) {
  const SegmentsShape segments = check_segments(inputs, "inputs", 1, kMaxFusionInputs);
  AttentionFusionShape shape;
  shape.count = static_cast<int64_t>(inputs.size());
  shape.rows = segments.rows;
  shape.in_features = segments.in_features;
  shape.segment_sizes = segments.segment_sizes;
  const at::Tensor& first = inputs[0];
  TORCH_CHECK_VALUE(static_cast<int64_t>(proj_weights.size()) == shape.count, "proj_weights: expected ",
                    shape.count, " tensors (one per input), got ", proj_weights.size());
  TORCH_CHECK_VALUE(proj_weights[0].dim() == 2, "proj_weights[0]: expected shape [D_out, ",
                    shape.segment_sizes[0], "], got ", proj_weights[0].sizes());
  shape.out_dim = proj_weights[0].size(0);
  for (int64_t m = 0; m < shape.count; ++m) {
    check_parameter(proj_weights[m], "proj_weights[" + std::to_string(m) + "]", first,
                    {shape.out_dim, shape.segment_sizes[m]});
  }
  TORCH_CHECK_VALUE(proj_biases.empty() || static_cast<int64_t>(proj_biases.size()) == shape.count,
                    "proj_biases: expected None or ", shape.count, " tensors (one per input), got ",
                    proj_biases.size());
  for (size_t m = 0; m < proj_biases.size(); ++m) {
    check_parameter(proj_biases[m], "proj_biases[" + std::to_string(m) + "]", first, {shape.out_dim});
  }
  check_parameter(score_weight, "score_weight", first, {shape.count, shape.in_features});
  if (score_bias.has_value() && score_bias->defined()) {
    check_parameter(*score_bias, "score_bias", first, {shape.count});
  }
  shape.output_sizes = segments.leading_sizes;
  shape.output_sizes.push_back(shape.out_dim);
  shape.weights_sizes = segments.leading_sizes;
  shape.weights_sizes.push_back(shape.count);
  return shape;
}

}  // namespace mmfast
