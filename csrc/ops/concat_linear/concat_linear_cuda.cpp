// concat_linear on CUDA: GEMMs through ATen (cuBLAS / cuBLASLt), the activation epilogue and the
// fused activation-gradient + bias-gradient pass through the kernels of kernels/.
//
// The segments are gathered into a temporary that lives only during the call (never saved, never
// in the autograd graph) so that float16 / bfloat16 results accumulate in float32 over the whole K,
// as one GEMM does.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "engine/activation_names.h"
#include "ops/concat_linear/concat_linear.h"
#include "concat_linear_kernels.h"
#include "engine/cuda_stream.h"

namespace mmfast::cuda {
namespace {

mmfast_dtype kernel_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MMFAST_FLOAT32;
    case at::kHalf: return MMFAST_FLOAT16;
    case at::kBFloat16: return MMFAST_BFLOAT16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, "inputs: expected dtype torch.float32, torch.float16 or torch.bfloat16 on CUDA, got ",
                   dtype_name(type));
  return MMFAST_FLOAT32;  // not reached: the check above throws
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "mmfast: CUDA kernel ", what, " failed: ", cudaGetErrorString(status));
}

at::Tensor gather(at::TensorList inputs, int64_t rows, int64_t in_features) {
  if (inputs.size() == 1) {
    return inputs[0].reshape({rows, in_features});
  }
  std::vector<at::Tensor> segments;
  segments.reserve(inputs.size());
  for (const auto& x : inputs) {
    segments.push_back(x.reshape({rows, x.size(-1)}));
  }
  return at::cat(segments, 1);
}

std::tuple<at::Tensor, at::Tensor> concat_linear_forward_cuda(at::TensorList inputs, const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              c10::string_view activation, bool save_for_backward) {
  const Activation act = parse_activation(activation);
  const ConcatLinearShape shape = check_concat_linear_args(inputs, weight, bias);
  const mmfast_dtype dtype = kernel_dtype(inputs[0].scalar_type());
  const c10::DeviceGuard device_guard(inputs[0].device());
  const bool keep_preactivation =
      save_for_backward && mmfast::saved_for_backward(act) == SavedForBackward::kPreactivation;
  const bool has_bias = bias.has_value() && bias->defined();
  const auto options = inputs[0].options();
  if (shape.rows == 0) {
    return {at::empty(shape.output_sizes, options),
            keep_preactivation ? at::empty(shape.output_sizes, options) : at::empty({0}, options)};
  }
  const at::Tensor x = gather(inputs, shape.rows, shape.in_features);
  const at::Tensor w = weight.contiguous();
  // cuBLASLt's epilogue fuses relu and the tanh GELU (not the erf one) with the bias.
  if (!keep_preactivation && has_bias && (act == Activation::kRelu || act == Activation::kGeluTanh)) {
    at::Tensor out = at::_addmm_activation(*bias, x, w.t(), 1, 1, /*use_gelu=*/act == Activation::kGeluTanh);
    return {out.view(shape.output_sizes), at::empty({0}, options)};
  }
  at::Tensor pre = has_bias ? at::addmm(*bias, x, w.t()) : at::mm(x, w.t());
  if (act == Activation::kNone) {
    return {pre.view(shape.output_sizes), at::empty({0}, options)};
  }
  at::Tensor out = keep_preactivation ? at::empty_like(pre) : pre;
  check_launch(mmfast_activation_forward(pre.const_data_ptr(), out.mutable_data_ptr(), pre.numel(), dtype,
                                         static_cast<int>(act), current_stream(pre.device())),
               "activation_forward");
  return {out.view(shape.output_sizes), keep_preactivation ? pre.view(shape.output_sizes) : at::empty({0}, options)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> concat_linear_backward_cuda(
    const at::Tensor& grad_output, at::TensorList inputs, const at::Tensor& weight, const at::Tensor& saved,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const Activation act = parse_activation(activation);
  const ConcatLinearBackwardShape shape =
      check_concat_linear_backward_args(grad_output, inputs, weight, saved, activation, output_mask[1]);
  const int64_t rows = shape.rows, in_features = shape.in_features, out_features = shape.out_features;
  const std::vector<int64_t>& input_sizes = shape.input_sizes;
  const mmfast_dtype dtype = kernel_dtype(grad_output.scalar_type());
  const c10::DeviceGuard device_guard(grad_output.device());
  const auto options = grad_output.options();

  const at::Tensor grad2d = grad_output.reshape({rows, out_features}).contiguous();
  at::Tensor grad_bias = output_mask[2] ? at::empty({out_features}, options) : at::empty({0}, options);
  at::Tensor grad_pre = grad2d;
  if (act != Activation::kNone) {
    grad_pre = at::empty_like(grad2d);
    const at::Tensor saved2d = saved.reshape({rows, out_features}).contiguous();
    at::Tensor workspace;
    if (output_mask[2]) {
      workspace = at::empty({static_cast<int64_t>(mmfast_activation_backward_workspace(rows, out_features))},
                            options.dtype(at::kFloat));
    }
    check_launch(mmfast_activation_backward(grad2d.const_data_ptr(), saved2d.const_data_ptr(),
                                            grad_pre.mutable_data_ptr(),
                                            output_mask[2] ? grad_bias.mutable_data_ptr() : nullptr,
                                            output_mask[2] ? workspace.mutable_data_ptr<float>() : nullptr, rows,
                                            out_features, dtype, static_cast<int>(act),
                                            current_stream(grad2d.device())),
                 "activation_backward");
  } else if (output_mask[2]) {
    grad_bias.copy_(grad2d.sum(0, /*keepdim=*/false, at::kFloat));
  }

  at::Tensor grad_input = at::empty({0}, options);
  if (output_mask[0]) {
    grad_input = rows == 0 ? at::empty(input_sizes, options) : at::mm(grad_pre, weight).view(input_sizes);
  }
  at::Tensor grad_weight = at::empty({0}, options);
  if (output_mask[1]) {
    grad_weight = at::zeros({out_features, in_features}, options);
    if (rows > 0) {
      int64_t offset = 0;
      for (const auto& x : inputs) {
        const int64_t width = x.size(-1);
        if (width > 0) {
          at::Tensor slice = grad_weight.narrow(1, offset, width);
          at::mm_out(slice, grad_pre.t(), x.reshape({rows, width}));
        }
        offset += width;
      }
    }
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmfast, CUDA, m) {
  m.impl("concat_linear_forward", &concat_linear_forward_cuda);
  m.impl("concat_linear_backward", &concat_linear_backward_cuda);
}

}  // namespace mmfast::cuda
