// Vectorized, parallel element-wise passes around the GEMMs of the CPU kernels, built once per CPU
// capability (activation_kernels_cpu.cpp); these entry points run the active build's.
#pragma once

#include <ATen/core/Tensor.h>

#include "activation.h"
#include "engine/cpu_capability.h"

namespace mmfast::cpu {

// out = act(pre) element-wise; both contiguous with the same shape and dtype; out may be pre.
void activation_forward(const at::Tensor& pre, const at::Tensor& out, Activation act);

// For contiguous [rows, cols] tensors: grad_pre = grad * act'(saved), where `saved` is what
// saved_for_backward(act) names. If grad_bias is defined ([cols], same dtype), it receives the
// column sums of grad * act'(saved), accumulated in float32 (float64 for double inputs).
void activation_backward(const at::Tensor& grad, const at::Tensor& saved, Activation act,
                         const at::Tensor& grad_pre, const at::Tensor& grad_bias);

using ActivationForwardFn = void(const at::Tensor&, const at::Tensor&, Activation);
using ActivationBackwardFn = void(const at::Tensor&, const at::Tensor&, Activation, const at::Tensor&,
                                  const at::Tensor&);
extern CpuKernel<ActivationForwardFn> activation_forward_kernel;
extern CpuKernel<ActivationBackwardFn> activation_backward_kernel;

}  // namespace mmfast::cpu
