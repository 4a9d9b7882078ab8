// activation_forward / activation_backward (engine/activation_kernels.h), built once per CPU
// capability (engine/cpu_capability.h).
#include "engine/activation_kernels.h"

#include "engine/compute_type.h"
#include "engine/cpu_capability.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <type_traits>

namespace mmfast::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// The math policy that lets the shared formulas in activation.h run on at::vec registers.
struct VecMath {
  template <typename V>
  static V exp(const V& x) { return x.exp(); }
  template <typename V>
  static V erf(const V& x) { return x.erf(); }
  template <typename V>
  static V tanh(const V& x) { return x.tanh(); }
  template <typename V>
  static V max(const V& a, const V& b) { return at::vec::maximum(a, b); }
  template <typename V>
  static V min(const V& a, const V& b) { return at::vec::minimum(a, b); }
  template <typename V>
  static V relu(const V& x) { return at::vec::clamp_min(x, V(0)); }
  template <typename V>
  static V positive_indicator(const V& y) { return V::blendv(V(0), V(1), y > V(0)); }
};

// Elements converted per block to compute_t on the stack.
constexpr int64_t kBlock = 256;

template <Activation A, typename scalar_t>
void forward_range(const scalar_t* pre, scalar_t* out, int64_t n) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t in_buf[kBlock];
  alignas(64) acc_t out_buf[kBlock];
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    const acc_t* x = as_compute(pre + begin, in_buf, len);
    acc_t* y = out_buf;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      y = out + begin;
    }
    for (int64_t i = 0; i < len; i += Vec::size()) {
      const int64_t count = std::min<int64_t>(Vec::size(), len - i);
      ::mmfast::activation_forward<A, Vec, VecMath>(Vec::loadu(x + i, count)).store(y + i, count);
    }
    if constexpr (!std::is_same_v<scalar_t, acc_t>) {
      at::vec::convert(out_buf, out + begin, len);
    }
  }
}

// One row: grad_pre = grad * act'(saved); adds the unrounded products into bias_acc if given.
template <Activation A, typename scalar_t>
void backward_row(const scalar_t* grad, const scalar_t* saved, scalar_t* grad_pre,
                  compute_t<scalar_t>* bias_acc, int64_t cols) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<acc_t>;
  alignas(64) acc_t grad_buf[kBlock];
  alignas(64) acc_t saved_buf[kBlock];
  alignas(64) acc_t out_buf[kBlock];
  for (int64_t begin = 0; begin < cols; begin += kBlock) {
    const int64_t len = std::min(kBlock, cols - begin);
    const acc_t* g = as_compute(grad + begin, grad_buf, len);
    const acc_t* s = as_compute(saved + begin, saved_buf, len);
    acc_t* y = out_buf;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      y = grad_pre + begin;
    }
    for (int64_t i = 0; i < len; i += Vec::size()) {
      const int64_t count = std::min<int64_t>(Vec::size(), len - i);
      const Vec gp = ::mmfast::activation_backward<A, Vec, VecMath>(Vec::loadu(g + i, count), Vec::loadu(s + i, count));
      gp.store(y + i, count);
      if (bias_acc != nullptr) {
        (Vec::loadu(bias_acc + begin + i, count) + gp).store(bias_acc + begin + i, count);
      }
    }
    if constexpr (!std::is_same_v<scalar_t, acc_t>) {
      at::vec::convert(out_buf, grad_pre + begin, len);
    }
  }
}

}  // namespace

void activation_forward_kernel_impl(const at::Tensor& pre, const at::Tensor& out, Activation act) {
  TORCH_INTERNAL_ASSERT(pre.is_contiguous() && out.is_contiguous() && pre.numel() == out.numel());
  const int64_t n = pre.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, pre.scalar_type(), "mmfast_activation_forward", [&] {
    const scalar_t* src = pre.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    dispatch_activation(act, [&](auto tag) {
      at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
        forward_range<decltype(tag)::value, scalar_t>(src + begin, dst + begin, end - begin);
      });
    });
  });
}

void activation_backward_kernel_impl(const at::Tensor& grad, const at::Tensor& saved, Activation act,
                                     const at::Tensor& grad_pre, const at::Tensor& grad_bias) {
  TORCH_INTERNAL_ASSERT(grad.dim() == 2 && grad.is_contiguous() && grad_pre.is_contiguous());
  const int64_t rows = grad.size(0);
  const int64_t cols = grad.size(1);
  const bool with_bias = grad_bias.defined();
  // A saved tensor is not read by the identity; point at grad so the loop has valid memory.
  const at::Tensor& saved_or_grad = saved_for_backward(act) == SavedForBackward::kNothing ? grad : saved;
  TORCH_INTERNAL_ASSERT(saved_or_grad.is_contiguous() && saved_or_grad.numel() == grad.numel());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad.scalar_type(), "mmfast_activation_backward", [&] {
    using acc_t = compute_t<scalar_t>;
    const int threads = at::get_num_threads();
    // One row of partial bias sums per thread, summed at the end.
    at::Tensor partial;
    if (with_bias) {
      partial = at::zeros({threads, cols}, grad.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    }
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* s = saved_or_grad.const_data_ptr<scalar_t>();
    scalar_t* gp = grad_pre.mutable_data_ptr<scalar_t>();
    acc_t* partial_data = with_bias ? partial.mutable_data_ptr<acc_t>() : nullptr;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
    dispatch_activation(act, [&](auto tag) {
      at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        acc_t* acc = with_bias ? partial_data + at::get_thread_num() * cols : nullptr;
        for (int64_t r = begin; r < end; ++r) {
          backward_row<decltype(tag)::value, scalar_t>(g + r * cols, s + r * cols, gp + r * cols, acc, cols);
        }
      });
    });
    if (with_bias) {
      grad_bias.copy_(partial.sum(0));
    }
  });
}

MMFAST_OFFER_CPU_KERNEL(activation_forward_kernel, &activation_forward_kernel_impl);
MMFAST_OFFER_CPU_KERNEL(activation_backward_kernel, &activation_backward_kernel_impl);

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
