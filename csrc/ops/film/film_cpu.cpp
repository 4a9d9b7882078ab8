// film on the CPU (definition: mmfast/ops/film.py).
//
// Forward: the modulation [B, 2C] = condition @ weight.T + bias through the GEMM engine, then one
// vectorized pass over the feature map, row (b, c) by row: out = x * (1 + gamma) + beta, in
// float32 for bfloat16 / float16 (one rounding per element, where eager rounds three times).
// Backward: one pass over the feature map computes the feature gradient g * (1 + gamma) and, in the
// same reads, the per-row sums of g * x and g (gamma's and beta's gradients); then the two small
// GEMMs and the bias gradient from those [B, 2C] sums.
// A channels-last map (film_channels_last: torch.channels_last, a transposed [B, L, C]) is read in
// its own order, each sample's [S, C] block with the channels' pattern of scales (below), and the
// output and feature gradient keep that layout: no copy to and from contiguous around the op.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <vector>
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

// ----- channels-last maps: each sample a dense [S, C] block, its element i of channel i % C.
//
// A channel's scale and shift repeat every C elements: written out over `period` = lcm(C, lanes)
// elements, plus one vector (so that a vector read starting anywhere in the period stays inside),
// they are read with the same vector loads as the map, so that no channel count leaves a scalar
// tail per position (24 channels at 16 lanes: a period of 48). Where the period would be long (C
// with few factors of two), each position's row of C is walked alone instead, its tail in scalars.
constexpr int64_t kMaxPeriod = 4096;

template <typename scalar_t>
struct ChannelPattern {
  using acc_t = compute_t<scalar_t>;
  static constexpr int64_t kLanes = Vectorized<scalar_t>::size();

  explicit ChannelPattern(int64_t channel_count) : channels(channel_count) {
    const int64_t whole = std::lcm(channels, kLanes);
    by_row = whole > kMaxPeriod;
    period = by_row ? channels : whole;
  }

  // The values of channel k % C at k = 0 .. period + lanes: values(c) for each channel c.
  template <typename Value>
  void write(std::vector<acc_t>& out, const Value& values) const {
    out.resize(period + kLanes);
    for (int64_t k = 0, c = 0; k < period + kLanes; ++k) {
      out[k] = values(c);
      if (++c == channels) {
        c = 0;
      }
    }
  }

  // Visits the elements of rows [row_begin, row_end) of a sample's block: step(i, j, lanes) with i
  // the element's offset in the block and j its position in the pattern, `lanes` elements at once
  // where a vector fits, else one.
  template <typename Step>
  void walk(int64_t row_begin, int64_t row_end, const Step& step) const {
    const auto span = [&](int64_t i, int64_t end, int64_t j) {
      for (; i + kLanes <= end; i += kLanes) {
        step(i, j, kLanes);
        j += kLanes;
        if (j >= period) {
          j -= period;
        }
      }
      for (; i < end; ++i, ++j) {
        step(i, j, 1);
      }
    };
    if (by_row) {
      for (int64_t row = row_begin; row < row_end; ++row) {
        span(row * channels, (row + 1) * channels, 0);
      }
    } else {
      span(row_begin * channels, row_end * channels, (row_begin * channels) % period);
    }
  }

  int64_t channels;
  int64_t period;
  bool by_row;
};

// The tasks of a channels-last pass: each a range of positions of one sample, about 32k elements.
struct ChannelsLastTasks {
  ChannelsLastTasks(int64_t batch, int64_t channels, int64_t spatial)
      : rows_per_task(std::max<int64_t>(1, 32768 / std::max<int64_t>(channels, 1))),
        per_sample((spatial + rows_per_task - 1) / rows_per_task),
        count(batch * per_sample),
        spatial(spatial) {}
  int64_t sample(int64_t task) const { return task / per_sample; }
  int64_t row_begin(int64_t task) const { return (task % per_sample) * rows_per_task; }
  int64_t row_end(int64_t task) const { return std::min(spatial, row_begin(task) + rows_per_task); }

  int64_t rows_per_task, per_sample, count, spatial;
};

template <typename scalar_t>
void modulate_channels_last(const scalar_t* x, const scalar_t* modulation, scalar_t* out, int64_t batch,
                            int64_t channels, int64_t spatial) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<scalar_t>;
  using AccVec = Vectorized<acc_t>;
  const ChannelsLastTasks tasks(batch, channels, spatial);
  const ChannelPattern<scalar_t> pattern(channels);
  at::parallel_for(0, tasks.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scale, shift;
    int64_t filled = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = tasks.sample(task);
      const scalar_t* gamma = modulation + b * 2 * channels;
      if (b != filled) {
        pattern.write(scale, [&](int64_t c) { return acc_t(1) + static_cast<acc_t>(gamma[c]); });
        pattern.write(shift, [&](int64_t c) { return static_cast<acc_t>(gamma[channels + c]); });
        filled = b;
      }
      const scalar_t* xb = x + b * spatial * channels;
      scalar_t* ob = out + b * spatial * channels;
      pattern.walk(tasks.row_begin(task), tasks.row_end(task), [&](int64_t i, int64_t j, int64_t lanes) {
        if (lanes == 1) {
          ob[i] = static_cast<scalar_t>(static_cast<acc_t>(xb[i]) * scale[j] + shift[j]);
        } else if constexpr (kReduced<scalar_t>) {
          auto [low, high] = at::vec::convert_to_float<scalar_t>(Vec::loadu(xb + i));
          constexpr int64_t half = AccVec::size();
          at::vec::convert_from_float<scalar_t>(
              at::vec::fmadd(low, AccVec::loadu(&scale[j]), AccVec::loadu(&shift[j])),
              at::vec::fmadd(high, AccVec::loadu(&scale[j + half]), AccVec::loadu(&shift[j + half])))
              .store(ob + i);
        } else {
          at::vec::fmadd(Vec::loadu(xb + i), AccVec::loadu(&scale[j]), AccVec::loadu(&shift[j])).store(ob + i);
        }
      });
    }
  });
}

// The backward over a channels-last map: grad_x = g * scale (when `grad_x`), and per task the sums
// of g * x and g by channel (when `x`) into partial [tasks, 2C] (double), which the caller adds up
// per sample.
template <typename scalar_t>
void backward_channels_last(const scalar_t* g, const scalar_t* x, const scalar_t* modulation, scalar_t* grad_x,
                            double* partial, const ChannelsLastTasks& tasks, int64_t channels) {
  using acc_t = compute_t<scalar_t>;
  using Vec = Vectorized<scalar_t>;
  using AccVec = Vectorized<acc_t>;
  const ChannelPattern<scalar_t> pattern(channels);
  const int64_t spatial = tasks.spatial;
  at::parallel_for(0, tasks.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scale, products, grads;
    int64_t filled = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = tasks.sample(task);
      if (b != filled) {
        const scalar_t* gamma = modulation + b * 2 * channels;
        pattern.write(scale, [&](int64_t c) { return acc_t(1) + static_cast<acc_t>(gamma[c]); });
        filled = b;
      }
      if (x != nullptr) {
        products.assign(pattern.period + pattern.kLanes, acc_t(0));
        grads.assign(pattern.period + pattern.kLanes, acc_t(0));
      }
      const int64_t offset = b * spatial * channels;
      const scalar_t* gb = g + offset;
      const scalar_t* xb = x ? x + offset : nullptr;
      scalar_t* gxb = grad_x ? grad_x + offset : nullptr;
      pattern.walk(tasks.row_begin(task), tasks.row_end(task), [&](int64_t i, int64_t j, int64_t lanes) {
        if (lanes == 1) {
          const acc_t gi = static_cast<acc_t>(gb[i]);
          if (gxb != nullptr) {
            gxb[i] = static_cast<scalar_t>(gi * scale[j]);
          }
          if (xb != nullptr) {
            products[j] += gi * static_cast<acc_t>(xb[i]);
            grads[j] += gi;
          }
          return;
        }
        if constexpr (kReduced<scalar_t>) {
          constexpr int64_t half = AccVec::size();
          auto [g_low, g_high] = at::vec::convert_to_float<scalar_t>(Vec::loadu(gb + i));
          if (gxb != nullptr) {
            at::vec::convert_from_float<scalar_t>(g_low * AccVec::loadu(&scale[j]),
                                                  g_high * AccVec::loadu(&scale[j + half]))
                .store(gxb + i);
          }
          if (xb != nullptr) {
            auto [x_low, x_high] = at::vec::convert_to_float<scalar_t>(Vec::loadu(xb + i));
            at::vec::fmadd(g_low, x_low, AccVec::loadu(&products[j])).store(&products[j]);
            at::vec::fmadd(g_high, x_high, AccVec::loadu(&products[j + half])).store(&products[j + half]);
            (AccVec::loadu(&grads[j]) + g_low).store(&grads[j]);
            (AccVec::loadu(&grads[j + half]) + g_high).store(&grads[j + half]);
          }
        } else {
          const Vec gv = Vec::loadu(gb + i);
          if (gxb != nullptr) {
            (gv * AccVec::loadu(&scale[j])).store(gxb + i);
          }
          if (xb != nullptr) {
            at::vec::fmadd(gv, Vec::loadu(xb + i), AccVec::loadu(&products[j])).store(&products[j]);
            (AccVec::loadu(&grads[j]) + gv).store(&grads[j]);
          }
        }
      });
      if (x != nullptr) {
        double* sums = partial + task * 2 * channels;
        std::fill(sums, sums + 2 * channels, 0.0);
        for (int64_t k = 0, c = 0; k < pattern.period + pattern.kLanes; ++k) {
          sums[c] += static_cast<double>(products[k]);
          sums[channels + c] += static_cast<double>(grads[k]);
          if (++c == channels) {
            c = 0;
          }
        }
      }
    }
  });
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
  const bool channels_last = film_channels_last(features);
  const at::Tensor x = film_in_layout(features, channels_last);
  at::Tensor out = film_empty_in_layout(x, channels_last);
  const int64_t rows = shape.batch * shape.channels, channels = shape.channels, spatial = shape.spatial;
  if (rows == 0 || spatial == 0) {
    return {out, modulation};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "film_forward_cpu", [&] {
    using acc_t = compute_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* mp = modulation.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      modulate_channels_last<scalar_t>(xp, mp, op, shape.batch, channels, spatial);
      return;
    }
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
  // The feature gradient keeps grad_output's layout (channels last or contiguous).
  const bool channels_last = film_channels_last(grad_output);
  const at::Tensor g = film_in_layout(grad_output, channels_last);
  const at::Tensor x = modulation_grad ? film_in_layout(features, channels_last) : at::Tensor();
  at::Tensor grad_features = mask[0] ? film_empty_in_layout(g, channels_last) : at::empty({0}, options);
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
      if (channels_last) {
        const ChannelsLastTasks tasks(batch, channels, spatial);
        const at::Tensor partial =
            modulation_grad ? at::empty({tasks.count, 2 * channels}, options.dtype(at::kDouble)) : at::Tensor();
        double* pp = modulation_grad ? partial.mutable_data_ptr<double>() : nullptr;
        backward_channels_last<scalar_t>(gp, xp, mp, gfp, pp, tasks, channels);
        if (dmp != nullptr) {
          // Each sample's task sums, added in task order (the same sum on every run).
          std::vector<double> sums(2 * channels);
          for (int64_t b = 0; b < batch; ++b) {
            std::fill(sums.begin(), sums.end(), 0.0);
            for (int64_t task = b * tasks.per_sample; task < (b + 1) * tasks.per_sample; ++task) {
              for (int64_t k = 0; k < 2 * channels; ++k) {
                sums[k] += pp[task * 2 * channels + k];
              }
            }
            for (int64_t k = 0; k < 2 * channels; ++k) {
              dmp[b * 2 * channels + k] = static_cast<scalar_t>(sums[k]);
            }
          }
        }
        return;
      }
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
