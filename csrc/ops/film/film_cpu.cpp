// film on the CPU (definition: mmfast/ops/film.py).
//
// Forward: the modulation [B, 2C] = condition @ weight.T + bias through the GEMM engine, then one
// vectorized pass over the feature map, row (b, c) by row: out = x * (1 + gamma) + beta, in
// float32 for bfloat16 / float16 (one rounding per element, where eager rounds three times).
// Backward: one pass over the feature map computes the feature gradient g * (1 + gamma) and, in the
// same reads, the per-row sums of g * x and g (gamma's and beta's gradients); then the two small
// GEMMs and the bias gradient from those [B, 2C] sums.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <type_traits>

#include "engine/lanes.h"
#include "engine/segment_linear.h"
#include "ops/film/film.h"
#include "engine/cpu_capability.h"

namespace mmfast::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Rows (b, c) per parallel task: enough elements for the task to amortize its scheduling.
int64_t rows_per_task(int64_t spatial) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(spatial, 1)); }

template <typename scalar_t>
constexpr bool kReduced = std::is_same_v<scalar_t, at::BFloat16> || std::is_same_v<scalar_t, at::Half>;

// The compute type of the passes: float for bfloat16 / float16, else the dtype itself.
template <typename scalar_t>
using compute_t = std::conditional_t<kReduced<scalar_t>, float, scalar_t>;

template <typename scalar_t>
void modulate_row(const scalar_t* x, scalar_t* out, int64_t count, compute_t<scalar_t> scale,
                  compute_t<scalar_t> shift) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<scalar_t>;
  using AccVec = Vectorized<acc_t>;
  const AccVec vscale(scale), vshift(shift);
  int64_t i = 0;
  if constexpr (kReduced<scalar_t>) {
    for (; i + Vec::size() <= count; i += Vec::size()) {
      auto [low, high] = at::vec::convert_to_float<scalar_t>(Vec::loadu(x + i));
      at::vec::convert_from_float<scalar_t>(at::vec::fmadd(low, vscale, vshift), at::vec::fmadd(high, vscale, vshift))
          .store(out + i);
    }
  } else {
    for (; i + Vec::size() <= count; i += Vec::size()) {
      at::vec::fmadd(Vec::loadu(x + i), vscale, vshift).store(out + i);
    }
  }
  for (; i < count; ++i) {
    out[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) * scale + shift);
  }
}

// grad_x = g * scale (when `grad_x`), and returns (sum g * x, sum g) when `x` (else zeros).
template <typename scalar_t>
std::array<double, 2> backward_row(const scalar_t* g, const scalar_t* x, scalar_t* grad_x, int64_t count,
                                   compute_t<scalar_t> scale) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<scalar_t>;
  using AccVec = Vectorized<acc_t>;
  const AccVec vscale(scale);
  AccVec product_sum(0), grad_sum(0);
  int64_t i = 0;
  const auto visit = [&](const AccVec& gv, const AccVec& xv) {
    product_sum = at::vec::fmadd(gv, xv, product_sum);
    grad_sum += gv;
  };
  if constexpr (kReduced<scalar_t>) {
    for (; i + Vec::size() <= count; i += Vec::size()) {
      auto [g_low, g_high] = at::vec::convert_to_float<scalar_t>(Vec::loadu(g + i));
      if (grad_x != nullptr) {
        at::vec::convert_from_float<scalar_t>(g_low * vscale, g_high * vscale).store(grad_x + i);
      }
      if (x != nullptr) {
        auto [x_low, x_high] = at::vec::convert_to_float<scalar_t>(Vec::loadu(x + i));
        visit(g_low, x_low);
        visit(g_high, x_high);
      }
    }
  } else {
    for (; i + Vec::size() <= count; i += Vec::size()) {
      const Vec gv = Vec::loadu(g + i);
      if (grad_x != nullptr) {
        (gv * vscale).store(grad_x + i);
      }
      if (x != nullptr) {
        visit(gv, Vec::loadu(x + i));
      }
    }
  }
  double products = sum_lanes(product_sum), grads = sum_lanes(grad_sum);
  for (; i < count; ++i) {
    const acc_t gi = static_cast<acc_t>(g[i]);
    if (grad_x != nullptr) {
      grad_x[i] = static_cast<scalar_t>(gi * scale);
    }
    if (x != nullptr) {
      products += static_cast<double>(gi) * static_cast<double>(static_cast<acc_t>(x[i]));
      grads += gi;
    }
  }
  return {products, grads};
}

std::tuple<at::Tensor, at::Tensor> film_forward_cpu(const at::Tensor& features, const at::Tensor& condition,
                                                    const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const FilmShape shape = check_film_args(features, condition, weight, bias);
  const at::Tensor modulation =
      linear_on_fastest_engine(GemmSite{"film.modulation"}, condition.contiguous(), weight.contiguous(),
                               bias.has_value() && bias->defined() ? std::optional<at::Tensor>(bias->contiguous())
                                                                   : std::nullopt,
                               Activation::kNone)
          .contiguous();
  const at::Tensor x = features.contiguous();
  at::Tensor out = at::empty_like(x);
  const int64_t rows = shape.batch * shape.channels, channels = shape.channels, spatial = shape.spatial;
  if (rows == 0 || spatial == 0) {
    return {out, modulation};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "film_forward_cpu", [&] {
    using acc_t = compute_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* mp = modulation.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, rows_per_task(spatial), [&](int64_t begin, int64_t end) {
      // (b, c) advanced with r, not divided out per row: rows are short for small maps (64
      // positions of an 8 x 8 map), where per-row work shows.
      int64_t b = begin / channels, c = begin % channels;
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* gamma_beta = mp + b * 2 * channels + c;
        modulate_row<scalar_t>(xp + r * spatial, op + r * spatial, spatial,
                               acc_t(1) + static_cast<acc_t>(gamma_beta[0]), static_cast<acc_t>(gamma_beta[channels]));
        if (++c == channels) {
          c = 0;
          ++b;
        }
      }
    });
  });
  return {out, modulation};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> film_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& features, const at::Tensor& condition, const at::Tensor& weight,
    const at::Tensor& modulation, std::array<bool, 4> mask) {
  TORCH_CHECK_VALUE(grad_output.dim() >= 2, "grad_output: expected a tensor [B, C, *spatial], got shape ",
                    grad_output.sizes());
  const int64_t batch = grad_output.size(0), channels = grad_output.size(1);
  const int64_t rows = batch * channels, spatial = rows == 0 ? 0 : grad_output.numel() / rows;
  TORCH_CHECK_VALUE(modulation.sizes() == at::IntArrayRef({batch, 2 * channels}), "modulation: expected shape [",
                    batch, ", ", 2 * channels, "], got ", modulation.sizes());
  const bool modulation_grad = mask[1] || mask[2] || mask[3];
  if (modulation_grad) {
    TORCH_CHECK_VALUE(features.sizes() == grad_output.sizes(), "features: expected shape ", grad_output.sizes(),
                      " like grad_output, got ", features.sizes());
  }
  const auto options = grad_output.options();
  const at::Tensor g = grad_output.contiguous();
  const at::Tensor x = modulation_grad ? features.contiguous() : at::Tensor();
  at::Tensor grad_features = mask[0] ? at::empty_like(g) : at::empty({0}, options);
  at::Tensor grad_modulation = modulation_grad ? at::zeros({batch, 2 * channels}, options) : at::Tensor();
  const at::Tensor m = modulation.contiguous();
  if (rows > 0 && spatial > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "film_backward_cpu", [&] {
      using acc_t = compute_t<scalar_t>;
      const scalar_t* gp = g.const_data_ptr<scalar_t>();
      const scalar_t* xp = modulation_grad ? x.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* mp = m.const_data_ptr<scalar_t>();
      scalar_t* gfp = mask[0] ? grad_features.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* dmp = modulation_grad ? grad_modulation.mutable_data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, rows, rows_per_task(spatial), [&](int64_t begin, int64_t end) {
        int64_t b = begin / channels, c = begin % channels;
        for (int64_t r = begin; r < end; ++r) {
          const int64_t at = b * 2 * channels + c;
          const acc_t scale = acc_t(1) + static_cast<acc_t>(mp[at]);
          const auto [products, grads] = backward_row<scalar_t>(gp + r * spatial, xp ? xp + r * spatial : nullptr,
                                                                gfp ? gfp + r * spatial : nullptr, spatial, scale);
          if (dmp != nullptr) {
            dmp[at] = static_cast<scalar_t>(products);
            dmp[at + channels] = static_cast<scalar_t>(grads);
          }
          if (++c == channels) {
            c = 0;
            ++b;
          }
        }
      });
    });
  }
  const auto empty = at::empty({0}, options);
  // The GEMMs are [B, 2C] x [2C, K] and [2C, B] x [B, K]: small next to the pass over the map.
  at::Tensor grad_condition = mask[1] ? at::mm(grad_modulation, weight) : empty;
  at::Tensor grad_weight = mask[2] ? at::mm(grad_modulation.t(), condition) : empty;
  at::Tensor grad_bias = mask[3] ? grad_modulation.sum(0) : empty;
  return {grad_features, grad_condition, grad_weight, grad_bias};
}

}  // namespace

MMFAST_CPU_KERNELS(m) {
  m.impl("film_forward", &film_forward_cpu);
  m.impl("film_backward", &film_backward_cpu);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
