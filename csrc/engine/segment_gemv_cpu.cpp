// segment_gemv (engine/segment_gemv.h), built once per CPU capability (engine/cpu_capability.h).
#include "engine/segment_gemv.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "engine/compute_type.h"
#include "engine/checks.h"
#include "engine/cpu_capability.h"

namespace mmfast::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Values per block converted to compute_t on the stack (reduced-precision inputs only).
constexpr int64_t kBlock = 256;
// Multiply-adds per parallel task: below this, waking the second thread costs more than it saves.
constexpr int64_t kTaskWork = 32768;

// a[0:n] . b[0:n] with four independent accumulators, so that the loop is not bound by the
// latency of one chain of fused multiply-adds.
template <typename acc_t>
acc_t dot(const acc_t* a, const acc_t* b, int64_t n) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t width = Vec::size();
  Vec s0(0), s1(0), s2(0), s3(0);
  int64_t i = 0;
  for (; i + 4 * width <= n; i += 4 * width) {
    s0 = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), s0);
    s1 = at::vec::fmadd(Vec::loadu(a + i + width), Vec::loadu(b + i + width), s1);
    s2 = at::vec::fmadd(Vec::loadu(a + i + 2 * width), Vec::loadu(b + i + 2 * width), s2);
    s3 = at::vec::fmadd(Vec::loadu(a + i + 3 * width), Vec::loadu(b + i + 3 * width), s3);
  }
  for (; i < n; i += width) {
    const int64_t count = std::min<int64_t>(width, n - i);
    // loadu with a count fills the rest of the register with zeros.
    s0 = at::vec::fmadd(Vec::loadu(a + i, count), Vec::loadu(b + i, count), s0);
  }
  return at::vec::vec_reduce_all<acc_t>([](Vec& u, Vec& v) { return u + v; }, (s0 + s1) + (s2 + s3));
}

// x_row[0:n] . w_row[0:n] in compute_t (x already in compute_t), converting reduced-precision
// weights block by block.
template <typename scalar_t>
compute_t<scalar_t> segment_dot(const compute_t<scalar_t>* x_row, const scalar_t* w_row, int64_t n) {
  using acc_t = compute_t<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return dot<acc_t>(x_row, w_row, n);
  } else {
    alignas(64) acc_t w_buf[kBlock];
    acc_t total = 0;
    for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
      const int64_t len = std::min(kBlock, n - j0);
      total += dot<acc_t>(x_row + j0, as_compute(w_row + j0, w_buf, len), len);
    }
    return total;
  }
}

}  // namespace

at::Tensor segment_gemv_kernel_impl(at::TensorList x_segments, at::TensorList w_segments,
                                    const std::optional<at::Tensor>& bias, const at::Tensor& coef,
                                    at::TensorList mixed_biases) {
  const auto count = static_cast<int64_t>(x_segments.size());
  const int64_t rows = x_segments[0].size(0);
  const int64_t out_features = w_segments[0].size(0);
  const bool has_bias = bias.has_value() && bias->defined();
  TORCH_INTERNAL_ASSERT(rows <= kMaxSegmentGemvRows && count <= kMaxSegments &&
                        static_cast<int64_t>(w_segments.size()) == count);
  TORCH_INTERNAL_ASSERT(mixed_biases.empty() ||
                        (static_cast<int64_t>(mixed_biases.size()) == count && coef.is_contiguous()));
  const auto dtype = x_segments[0].scalar_type();
  std::vector<at::Tensor> w(w_segments.begin(), w_segments.end());
  for (auto& t : w) {
    if (t.size(1) > 1 && t.stride(1) != 1) {
      t = t.contiguous();
    }
  }
  std::vector<at::Tensor> mixed(mixed_biases.begin(), mixed_biases.end());
  for (auto& t : mixed) {
    t = t.contiguous();
  }
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  // The few input rows once, side by side in compute_t: every output feature reads them again.
  int64_t in_features = 0;
  for (const auto& x : x_segments) {
    in_features += x.size(1);
  }
  const auto compute_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor x_compute = at::empty({rows, in_features}, x_segments[0].options().dtype(compute_dtype));
  int64_t offset = 0;
  for (const auto& x : x_segments) {
    x_compute.narrow(1, offset, x.size(1)).copy_(x);
    offset += x.size(1);
  }
  at::Tensor out = at::empty({rows, out_features}, x_segments[0].options());
  const int64_t grain = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(rows * in_features, 1));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "mmfast_segment_gemv", [&] {
    using acc_t = compute_t<scalar_t>;
    const scalar_t* w_data[kMaxSegments];
    int64_t w_stride[kMaxSegments];
    int64_t widths[kMaxSegments];
    const scalar_t* mixed_data[kMaxSegments];
    for (int64_t m = 0; m < count; ++m) {
      w_data[m] = w[m].const_data_ptr<scalar_t>();
      w_stride[m] = w[m].stride(0);
      widths[m] = w[m].size(1);
      mixed_data[m] = mixed.empty() ? nullptr : mixed[m].const_data_ptr<scalar_t>();
    }
    const acc_t* x_data = x_compute.const_data_ptr<acc_t>();
    const scalar_t* bias_data = has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* coef_data = mixed.empty() ? nullptr : coef.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, out_features, grain, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t r = 0; r < rows; ++r) {
          acc_t total = bias_data != nullptr ? static_cast<acc_t>(bias_data[n]) : acc_t(0);
          const acc_t* x_row = x_data + r * in_features;
          for (int64_t m = 0; m < count; ++m) {
            total += segment_dot<scalar_t>(x_row, w_data[m] + n * w_stride[m], widths[m]);
            x_row += widths[m];
            if (coef_data != nullptr) {
              total += static_cast<acc_t>(coef_data[r * count + m]) * static_cast<acc_t>(mixed_data[m][n]);
            }
          }
          out_data[r * out_features + n] = static_cast<scalar_t>(total);
        }
      }
    });
  });
  return out;
}

MMFAST_OFFER_CPU_KERNEL(segment_gemv_kernel, &segment_gemv_kernel_impl);

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
