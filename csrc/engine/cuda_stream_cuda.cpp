#include "engine/cuda_stream.h"

#include <ATen/cuda/CUDAContext.h>

namespace mmfast::cuda {

cudaStream_t current_stream(const c10::Device& device) {
  return at::cuda::getCurrentCUDAStream(device.index()).stream();
}

}  // namespace mmfast::cuda
