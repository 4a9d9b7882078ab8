// The entry points of the element-wise passes, compiled once: each calls the active CPU
// capability's build (activation_kernels_cpu.cpp).
#include "engine/activation_kernels.h"

namespace mmfast::cpu {

CpuKernel<ActivationForwardFn> activation_forward_kernel;
CpuKernel<ActivationBackwardFn> activation_backward_kernel;

void activation_forward(const at::Tensor& pre, const at::Tensor& out, Activation act) {
  activation_forward_kernel.fn(pre, out, act);
}

void activation_backward(const at::Tensor& grad, const at::Tensor& saved, Activation act,
                         const at::Tensor& grad_pre, const at::Tensor& grad_bias) {
  activation_backward_kernel.fn(grad, saved, act, grad_pre, grad_bias);
}

}  // namespace mmfast::cpu
