// C launcher API of the concat_linear CUDA kernels. No PyTorch types: the PyTorch glue
// (csrc/ops/concat_linear/concat_linear_cuda.cpp) passes raw pointers and the stream to launch on.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MMFAST_FLOAT32 = 0, MMFAST_FLOAT16 = 1, MMFAST_BFLOAT16 = 2 } mmfast_dtype;

// out = act(pre) element-wise over `numel` contiguous values; `out` may be `pre`. `activation` is
// the value of mmfast::Activation (kernels/activation.h).
cudaError_t mmfast_activation_forward(const void* pre, void* out, int64_t numel, mmfast_dtype dtype,
                                      int activation, cudaStream_t stream);

// Number of floats of workspace mmfast_activation_backward needs to produce a bias gradient.
size_t mmfast_activation_backward_workspace(int64_t rows, int64_t cols);

// For contiguous [rows, cols] tensors: grad_pre = grad * act'(saved), `saved` being the
// pre-activation or the output as saved_for_backward() says (ignored for none). If grad_bias is
// not NULL it receives the column sums of grad_pre, accumulated in float32 in a fixed order
// (deterministic) through `workspace`.
cudaError_t mmfast_activation_backward(const void* grad, const void* saved, void* grad_pre, void* grad_bias,
                                       float* workspace, int64_t rows, int64_t cols, mmfast_dtype dtype,
                                       int activation, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
