// segment_gemv's entry point, compiled once: it calls the active CPU capability's build
// (segment_gemv_cpu.cpp).
#include "engine/segment_gemv.h"

namespace mmfast::cpu {

CpuKernel<SegmentGemvFn> segment_gemv_kernel;

at::Tensor segment_gemv(at::TensorList x_segments, at::TensorList w_segments, const std::optional<at::Tensor>& bias,
                        const at::Tensor& coef, at::TensorList mixed_biases) {
  return segment_gemv_kernel.fn(x_segments, w_segments, bias, coef, mixed_biases);
}

}  // namespace mmfast::cpu
