// clip_loss on the CPU (definition: mmfast/ops/clip_loss.py).
//
// Forward: one pass over the tiles of the logit matrix (engine/pairwise.h: a GEMM per tile into a
// reused buffer). Each tile updates the running (max, sum of exp) of its rows and, for the
// symmetric loss, of its columns, so both log-sum-exps come out of the same pass; the forward keeps
// only them (O(B) numbers) beyond its inputs. Backward: the tiles again, the combined gradient
// g * (softmax_rows + softmax_cols) / 2B minus the diagonal's g / B formed in one vectorized pass,
// then two GEMMs per tile accumulate the feature gradients; the scale and bias gradients are sums
// over the same pass. Forward with gradients (`clip_loss_forward_with_grads`): when the logits are
// one tile, the gradient pass runs over that tile as soon as its statistics are complete, so its
// GEMM runs once (three GEMMs in all); larger matrices run the forward, then the backward's pass.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "engine/lanes.h"
#include "engine/pairwise.h"
#include "engine/segment_linear.h"
#include "engine/cpu_capability.h"

namespace mmfast::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Running (max, sum of exp(x - max)) merged with a block's (max, sum).
template <typename scalar_t>
void merge_lse(scalar_t& max, scalar_t& sum, scalar_t block_max, scalar_t block_sum) {
  if (block_max == -std::numeric_limits<scalar_t>::infinity()) {
    return;
  }
  if (block_max > max) {
    sum = sum * std::exp(max - block_max) + block_sum;
    max = block_max;
  } else {
    sum += block_sum * std::exp(block_max - max);
  }
}

// For each row of the tile: logits = scale * products + bias, then merges the row's
// (max, sum exp) into the running statistics. Parallel over rows.
template <typename scalar_t>
void update_row_stats(const at::Tensor& products, scalar_t scale, scalar_t bias, scalar_t* row_max,
                      scalar_t* row_sum) {
  using Vec = Vectorized<scalar_t>;
  const int64_t rows = products.size(0), cols = products.size(1);
  const scalar_t* data = products.const_data_ptr<scalar_t>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    const Vec vscale(scale), vbias(bias);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* row = data + r * cols;
      Vec vmax(-std::numeric_limits<scalar_t>::infinity());
      int64_t c = 0;
      for (; c + Vec::size() <= cols; c += Vec::size()) {
        vmax = at::vec::maximum(vmax, at::vec::fmadd(Vec::loadu(row + c), vscale, vbias));
      }
      scalar_t block_max = max_lanes(vmax);
      for (; c < cols; ++c) {
        block_max = std::max(block_max, row[c] * scale + bias);
      }
      const Vec vshift(block_max);
      Vec vsum(0);
      c = 0;
      for (; c + Vec::size() <= cols; c += Vec::size()) {
        vsum += (at::vec::fmadd(Vec::loadu(row + c), vscale, vbias) - vshift).exp();
      }
      scalar_t block_sum = sum_lanes(vsum);
      for (; c < cols; ++c) {
        block_sum += std::exp(row[c] * scale + bias - block_max);
      }
      merge_lse(row_max[r], row_sum[r], block_max, block_sum);
    }
  });
}

// The same for each column of the tile, vectorized across columns. Parallel over column chunks.
template <typename scalar_t>
void update_col_stats(const at::Tensor& products, scalar_t scale, scalar_t bias, scalar_t* col_max,
                      scalar_t* col_sum) {
  using Vec = Vectorized<scalar_t>;
  const int64_t rows = products.size(0), cols = products.size(1);
  const scalar_t* data = products.const_data_ptr<scalar_t>();
  constexpr int64_t kChunk = 64;
  at::parallel_for(0, (cols + kChunk - 1) / kChunk, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::array<scalar_t, kChunk> block_max, block_sum;
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      const int64_t c0 = chunk * kChunk, width = std::min(kChunk, cols - c0);
      block_max.fill(-std::numeric_limits<scalar_t>::infinity());
      block_sum.fill(0);
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* row = data + r * cols + c0;
        int64_t c = 0;
        for (; c + Vec::size() <= width; c += Vec::size()) {
          const Vec x = at::vec::fmadd(Vec::loadu(row + c), Vec(scale), Vec(bias));
          at::vec::maximum(Vec::loadu(block_max.data() + c), x).store(block_max.data() + c);
        }
        for (; c < width; ++c) {
          block_max[c] = std::max(block_max[c], row[c] * scale + bias);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* row = data + r * cols + c0;
        int64_t c = 0;
        for (; c + Vec::size() <= width; c += Vec::size()) {
          const Vec x = at::vec::fmadd(Vec::loadu(row + c), Vec(scale), Vec(bias));
          (Vec::loadu(block_sum.data() + c) + (x - Vec::loadu(block_max.data() + c)).exp())
              .store(block_sum.data() + c);
        }
        for (; c < width; ++c) {
          block_sum[c] += std::exp(row[c] * scale + bias - block_max[c]);
        }
      }
      for (int64_t c = 0; c < width; ++c) {
        merge_lse(col_max[c0 + c], col_sum[c0 + c], block_max[c], block_sum[c]);
      }
    }
  });
}

// The forward's running statistics: each row's (and, when symmetric, column's) max, overwritten
// by its log-sum-exp once every tile is in, and sum of exp(logit - max).
template <typename scalar_t>
struct LseStats {
  scalar_t* row_lse;
  scalar_t* col_lse;
  std::vector<scalar_t> row_sum, col_sum;

  LseStats(scalar_t* rows_out, int64_t rows, scalar_t* cols_out, int64_t cols)
      : row_lse(rows_out), col_lse(cols_out), row_sum(rows, scalar_t(0)), col_sum(cols, scalar_t(0)) {
    std::fill(row_lse, row_lse + rows, -std::numeric_limits<scalar_t>::infinity());
    std::fill(col_lse, col_lse + cols, -std::numeric_limits<scalar_t>::infinity());
  }

  void add_tile(const TileBounds& tile, const at::Tensor& products, scalar_t s, scalar_t b) {
    update_row_stats<scalar_t>(products, s, b, row_lse + tile.row_begin, row_sum.data() + tile.row_begin);
    if (!col_sum.empty()) {
      update_col_stats<scalar_t>(products, s, b, col_lse + tile.col_begin, col_sum.data() + tile.col_begin);
    }
  }

  // The log-sum-exps in place of the maxima, and the loss: the mean over rows of lse - positive
  // logit, and over columns when symmetric, where text c's positive is image c's (one text per
  // image). One pass (at small B a chain of ATen ops on [B] vectors cost more than the tiles).
  double finish(const scalar_t* positive_products, scalar_t s, scalar_t b, bool symmetric) {
    const int64_t rows = static_cast<int64_t>(row_sum.size()), cols = static_cast<int64_t>(col_sum.size());
    double row_total = 0, col_total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      row_lse[r] += std::log(row_sum[r]);
      row_total += static_cast<double>(row_lse[r]) - static_cast<double>(positive_products[r] * s + b);
    }
    for (int64_t c = 0; c < cols; ++c) {
      col_lse[c] += std::log(col_sum[c]);
      col_total += static_cast<double>(col_lse[c]) - static_cast<double>(positive_products[c] * s + b);
    }
    return symmetric ? (row_total / static_cast<double>(rows) + col_total / static_cast<double>(cols)) / 2
                     : row_total / static_cast<double>(rows);
  }
};

// The feature gradients in the compute dtype (undefined where not asked for) and the scale's and
// bias's as double sums.
struct ClipGrads {
  at::Tensor image, text;
  double scale = 0, bias = 0;
};

// Over one tile, given the log-sum-exps: d loss / d logits = g * (softmax_rows / B (+ softmax_cols
// / B, both halved when symmetric), minus 1 / B at each positive pair (twice 1 / 2B when
// symmetric)), times the scale, written over the products for the feature GEMMs; then those GEMMs,
// and the tile's terms of the scale and bias gradients.
template <typename scalar_t>
void tile_gradient(const TileBounds& tile, const at::Tensor& products, const at::Tensor& image,
                   const at::Tensor& text, scalar_t s, scalar_t b, scalar_t g, const scalar_t* rl, const scalar_t* cl,
                   const scalar_t* pp, int64_t label_offset, bool symmetric, ClipGrads& grads) {
  using Vec = Vectorized<scalar_t>;
  const int64_t rows = image.size(0);
  const scalar_t weight = symmetric ? g / scalar_t(2 * rows) : g / scalar_t(rows);
  const scalar_t positive = g / scalar_t(rows);
  const int64_t tile_cols = tile.cols();
  scalar_t* data = products.mutable_data_ptr<scalar_t>();
  const int threads = at::get_num_threads();
  std::vector<double> scale_part(threads, 0.0), bias_part(threads, 0.0);
  at::parallel_for(0, tile.rows(), 16, [&](int64_t begin, int64_t end) {
    const int thread = at::get_thread_num();
    const Vec vs(s), vb(b), vw(weight);
    Vec vscale_acc(0), vbias_acc(0);
    double scale_acc = 0, bias_acc = 0;
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* row = data + r * tile_cols;
      const Vec vrow_lse(rl[tile.row_begin + r]);
      int64_t c = 0;
      for (; c + Vec::size() <= tile_cols; c += Vec::size()) {
        const Vec product = Vec::loadu(row + c);
        const Vec logit = at::vec::fmadd(product, vs, vb);
        Vec p = (logit - vrow_lse).exp();
        if (symmetric) {
          p = p + (logit - Vec::loadu(cl + tile.col_begin + c)).exp();
        }
        const Vec grad = p * vw;
        vscale_acc = at::vec::fmadd(grad, product, vscale_acc);
        vbias_acc += grad;
        // d loss / d products = d loss / d logits * scale, for the feature GEMMs.
        (grad * vs).store(row + c);
      }
      for (; c < tile_cols; ++c) {
        const scalar_t product = row[c], logit = product * s + b;
        scalar_t p = std::exp(logit - rl[tile.row_begin + r]);
        if (symmetric) {
          p += std::exp(logit - cl[tile.col_begin + c]);
        }
        const scalar_t grad = p * weight;
        scale_acc += grad * product;
        bias_acc += grad;
        row[c] = grad * s;
      }
      // The positive pair of this row, if the tile holds it.
      const int64_t positive_col = tile.row_begin + r + label_offset - tile.col_begin;
      if (positive_col >= 0 && positive_col < tile_cols) {
        row[positive_col] -= positive * s;
        bias_acc -= positive;
        scale_acc -= positive * pp[tile.row_begin + r];
      }
    }
    scale_part[thread] += scale_acc + sum_lanes(vscale_acc);
    bias_part[thread] += bias_acc + sum_lanes(vbias_acc);
  });
  for (int t = 0; t < threads; ++t) {
    grads.scale += scale_part[t];
    grads.bias += bias_part[t];
  }
  // products now holds d loss / d products for the tile.
  accumulate_feature_grads("clip_loss.grad_image", "clip_loss.grad_text", products, tile, image, text, grads.image,
                           grads.text);
}

// The compute-dtype operands and scalars of both passes.
struct ClipOperands {
  at::Tensor image, text, scale;
  std::optional<at::Tensor> bias;

  ClipOperands(const at::Tensor& image_features, const at::Tensor& text_features, const at::Tensor& logit_scale,
               const std::optional<at::Tensor>& logit_bias)
      : image(pairwise_operand(image_features)), text(pairwise_operand(text_features)) {
    scale = logit_scale.to(image.scalar_type());
    if (logit_bias.has_value() && logit_bias->defined()) {
      bias = logit_bias->to(image.scalar_type());
    }
  }
};

ClipGrads allocated_grads(const ClipOperands& x, std::array<bool, 4> mask) {
  // Written by the first tile of each row (column) block, accumulated by the others.
  ClipGrads grads;
  grads.image = mask[0] ? at::empty(x.image.sizes(), x.image.options()) : at::Tensor();
  grads.text = mask[1] ? at::empty(x.text.sizes(), x.text.options()) : at::Tensor();
  return grads;
}

// The forward's tile pass; with `grads` and a logit matrix of one tile, also the gradients of g *
// loss (g = 1), formed over the same tile once its statistics are complete. Returns the loss.
double clip_forward_tiles(const ClipOperands& x, int64_t label_offset, bool symmetric, const at::Tensor& row_lse,
                          const at::Tensor& col_lse, ClipGrads* grads) {
  const int64_t rows = x.image.size(0), cols = x.text.size(0);
  double loss = 0;
  AT_DISPATCH_FLOATING_TYPES(x.image.scalar_type(), "clip_loss_forward_cpu", [&] {
    const scalar_t s = scalar_value<scalar_t>(x.scale), b = x.bias ? scalar_value<scalar_t>(*x.bias) : scalar_t(0);
    LseStats<scalar_t> stats(row_lse.mutable_data_ptr<scalar_t>(), rows, col_lse.mutable_data_ptr<scalar_t>(),
                             symmetric ? cols : 0);
    std::vector<scalar_t> positives(rows);
    row_dots<scalar_t>(x.image, x.text, label_offset, positives.data());
    for_each_product_tile(x.image, x.text, [&](const TileBounds& tile, const at::Tensor& products) {
      stats.add_tile(tile, products, s, b);
      if (grads != nullptr) {  // the only tile: the statistics are complete
        loss = stats.finish(positives.data(), s, b, symmetric);
        tile_gradient<scalar_t>(tile, products, x.image, x.text, s, b, scalar_t(1), stats.row_lse,
                                symmetric ? stats.col_lse : nullptr, positives.data(), label_offset, symmetric,
                                *grads);
      }
    });
    if (grads == nullptr || rows == 0 || cols == 0) {  // no tile (empty batches) finishes here
      loss = stats.finish(positives.data(), s, b, symmetric);
    }
  });
  return loss;
}

// The backward's pass over the tiles, given the log-sum-exps: the gradients of g * loss.
void clip_backward_tiles(const ClipOperands& x, const at::Tensor& grad_loss, const at::Tensor& row_lse,
                         const at::Tensor& col_lse, int64_t label_offset, bool symmetric, ClipGrads& grads) {
  const at::Tensor rlse = row_lse.to(x.image.scalar_type()).contiguous();
  const at::Tensor clse = symmetric ? col_lse.to(x.image.scalar_type()).contiguous() : col_lse;
  AT_DISPATCH_FLOATING_TYPES(x.image.scalar_type(), "clip_loss_backward_cpu", [&] {
    const scalar_t s = scalar_value<scalar_t>(x.scale), b = x.bias ? scalar_value<scalar_t>(*x.bias) : scalar_t(0);
    const scalar_t g = scalar_value<scalar_t>(grad_loss);
    // The raw products of the positive pairs, for their term of the scale gradient.
    std::vector<scalar_t> positive_products(x.image.size(0));
    row_dots<scalar_t>(x.image, x.text, label_offset, positive_products.data());
    const scalar_t* cl = symmetric ? clse.const_data_ptr<scalar_t>() : nullptr;
    for_each_product_tile(x.image, x.text, [&](const TileBounds& tile, const at::Tensor& products) {
      tile_gradient<scalar_t>(tile, products, x.image, x.text, s, b, g, rlse.const_data_ptr<scalar_t>(), cl,
                              positive_products.data(), label_offset, symmetric, grads);
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_loss_forward_cpu(const at::Tensor& image_features,
                                                                     const at::Tensor& text_features,
                                                                     const at::Tensor& logit_scale,
                                                                     const std::optional<at::Tensor>& logit_bias,
                                                                     int64_t label_offset, bool symmetric) {
  // The loss computes in float32 (or float64) whatever autocast says: its tile GEMMs must not be
  // cast down to bfloat16 by an enclosing autocast region.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_pairwise_args(image_features, text_features, logit_scale, logit_bias, label_offset, symmetric, false);
  const ClipOperands x(image_features, text_features, logit_scale, logit_bias);
  at::Tensor row_lse = at::empty({x.image.size(0)}, x.image.options());
  at::Tensor col_lse = at::empty({symmetric ? x.text.size(0) : 0}, x.image.options());
  const double loss = clip_forward_tiles(x, label_offset, symmetric, row_lse, col_lse, nullptr);
  return {at::scalar_tensor(loss, x.image.options()), row_lse, col_lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> clip_loss_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& image_features, const at::Tensor& text_features,
    const at::Tensor& logit_scale, const std::optional<at::Tensor>& logit_bias, const at::Tensor& row_lse,
    const at::Tensor& col_lse, int64_t label_offset, bool symmetric, std::array<bool, 4> mask) {
  // The loss computes in float32 (or float64) whatever autocast says: its tile GEMMs must not be
  // cast down to bfloat16 by an enclosing autocast region.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_pairwise_args(image_features, text_features, logit_scale, logit_bias, label_offset, symmetric, false);
  const int64_t rows = image_features.size(0), cols = text_features.size(0);
  TORCH_CHECK_VALUE(row_lse.dim() == 1 && row_lse.size(0) == rows, "row_lse: expected shape [", rows, "], got ",
                    row_lse.sizes());
  TORCH_CHECK_VALUE(!symmetric || (col_lse.dim() == 1 && col_lse.size(0) == cols), "col_lse: expected shape [",
                    cols, "], got ", col_lse.sizes());
  const ClipOperands x(image_features, text_features, logit_scale, logit_bias);
  ClipGrads grads = allocated_grads(x, mask);
  clip_backward_tiles(x, grad_loss, row_lse, col_lse, label_offset, symmetric, grads);
  const auto empty = at::empty({0}, image_features.options());
  return {mask[0] ? grads.image.to(image_features.scalar_type()) : empty,
          mask[1] ? grads.text.to(text_features.scalar_type()) : empty,
          mask[2] ? at::full({}, grads.scale, logit_scale.options()) : empty,
          mask[3] && x.bias ? at::full({}, grads.bias, logit_bias->options()) : empty};
}

// The loss and its gradients (of the loss itself: grad_loss = 1), in the compute dtype. A logit
// matrix of one tile gets them from the forward's own pass (its GEMM run once, three in all);
// larger ones need every column's statistics before any gradient, so the tiles are passed over
// again, as the backward does.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
clip_loss_forward_with_grads_cpu(
    const at::Tensor& image_features, const at::Tensor& text_features, const at::Tensor& logit_scale,
    const std::optional<at::Tensor>& logit_bias, int64_t label_offset, bool symmetric, std::array<bool, 4> mask) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_pairwise_args(image_features, text_features, logit_scale, logit_bias, label_offset, symmetric, false);
  const ClipOperands x(image_features, text_features, logit_scale, logit_bias);
  const auto options = x.image.options();
  at::Tensor row_lse = at::empty({x.image.size(0)}, options);
  at::Tensor col_lse = at::empty({symmetric ? x.text.size(0) : 0}, options);
  ClipGrads grads = allocated_grads(x, mask);
  double loss = 0;
  if (single_product_tile(x.image.size(0), x.text.size(0))) {
    loss = clip_forward_tiles(x, label_offset, symmetric, row_lse, col_lse, &grads);
  } else {
    loss = clip_forward_tiles(x, label_offset, symmetric, row_lse, col_lse, nullptr);
    clip_backward_tiles(x, at::scalar_tensor(1.0, options), row_lse, col_lse, label_offset, symmetric, grads);
  }
  // Outputs must not alias one another: an empty tensor of its own for each gradient left out.
  const auto empty = [&] { return at::empty({0}, options); };
  return {at::scalar_tensor(loss, options),      row_lse, col_lse, mask[0] ? grads.image : empty(),
          mask[1] ? grads.text : empty(),
          mask[2] ? at::full({}, grads.scale, logit_scale.options()) : empty(),
          mask[3] && x.bias ? at::full({}, grads.bias, logit_bias->options()) : empty()};
}

}  // namespace

MMFAST_CPU_KERNELS(m) {
  m.impl("clip_loss_forward", &clip_loss_forward_cpu);
  m.impl("clip_loss_backward", &clip_loss_backward_cpu);
  m.impl("clip_loss_forward_with_grads", &clip_loss_forward_with_grads_cpu);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
