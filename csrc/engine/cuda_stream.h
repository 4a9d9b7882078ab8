// The one piece of CUDA glue that needs PyTorch's CUDA headers, kept apart so that the rest of the
// glue compiles (and is syntax-checked in CI) against a CPU build of PyTorch.
#pragma once

#include <c10/core/Device.h>
#include <cuda_runtime_api.h>

namespace mmfast::cuda {

// PyTorch's current stream on `device`: kernels must launch there to order with ATen's work.
cudaStream_t current_stream(const c10::Device& device);

}  // namespace mmfast::cuda
