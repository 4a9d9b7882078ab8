// siglip_loss on the CPU (definition: mmfast/ops/siglip_loss.py).
//
// With labels y = 2 * [positive pair] - 1, softplus(-y * L) = softplus(L) - L at the positive pairs,
// so the loss is (sum over every logit of softplus(L) - sum of the positive logits) / B: one pass
// over the tiles of the logit matrix (engine/pairwise.h), nothing kept. The gradient of each logit
// is its own, d loss / d L = g * (sigmoid(L) - [positive]) / B, formed over the tile in one
// vectorized pass; then two GEMMs per tile accumulate the feature gradients, and the scale and bias
// gradients are sums over the same pass. `siglip_loss_forward_with_grads` does both in one pass
// (three GEMMs per tile, what autograd uses on the CPU); `siglip_loss_backward` passes over the
// tiles again (four in all, when the forward kept nothing).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
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

template <typename scalar_t>
scalar_t softplus(scalar_t x) {
  return std::max(x, scalar_t(0)) + std::log1p(std::exp(-std::abs(x)));
}

// Sum of softplus(scale * products + bias) over the tile, in double.
template <typename scalar_t>
double softplus_sum(const at::Tensor& products, scalar_t scale, scalar_t bias) {
  using Vec = Vectorized<scalar_t>;
  const int64_t rows = products.size(0), cols = products.size(1);
  const scalar_t* data = products.const_data_ptr<scalar_t>();
  const int threads = at::get_num_threads();
  std::vector<double> partial(threads, 0.0);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    const Vec vs(scale), vb(bias), zero(0), one(1);
    double acc = 0;
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* row = data + r * cols;
      Vec vacc(0);
      int64_t c = 0;
      for (; c + Vec::size() <= cols; c += Vec::size()) {
        const Vec x = at::vec::fmadd(Vec::loadu(row + c), vs, vb);
        vacc += at::vec::maximum(x, zero) + (zero - x.abs()).exp().log1p();
      }
      acc += sum_lanes(vacc);
      for (; c < cols; ++c) {
        acc += softplus(row[c] * scale + bias);
      }
    }
    partial[at::get_thread_num()] += acc;
  });
  double total = 0;
  for (double p : partial) {
    total += p;
  }
  return total;
}

at::Tensor siglip_loss_forward_cpu(const at::Tensor& image_features, const at::Tensor& text_features,
                                   const at::Tensor& logit_scale, const at::Tensor& logit_bias, int64_t label_offset) {
  // The loss computes in float32 (or float64) whatever autocast says: its tile GEMMs must not be
  // cast down to bfloat16 by an enclosing autocast region.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_pairwise_args(image_features, text_features, logit_scale, logit_bias, label_offset, false, true);
  const at::Tensor image = pairwise_operand(image_features), text = pairwise_operand(text_features);
  const int64_t rows = image.size(0);
  double total = 0;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "siglip_loss_forward_cpu", [&] {
    const scalar_t s = scalar_value<scalar_t>(logit_scale), b = scalar_value<scalar_t>(logit_bias);
    for_each_product_tile(image, text, [&](const TileBounds&, const at::Tensor& products) {
      total += softplus_sum<scalar_t>(products, s, b);
    });
    // Minus the positive logits, in the same pass's precision (double sums).
    std::vector<scalar_t> positives(rows);
    row_dots<scalar_t>(image, text, label_offset, positives.data());
    for (int64_t r = 0; r < rows; ++r) {
      total -= static_cast<double>(positives[r] * s + b);
    }
  });
  return at::scalar_tensor(total / static_cast<double>(rows), image.options());
}

// Over one tile: d loss / d products = weight * (sigmoid(L) - [positive]) * scale written over the
// products (for the feature GEMMs), and the tile's terms of the scale and bias gradients added to
// `grad_scale_sum` / `grad_bias_sum`. `positive_products` are the raw products of the positive pairs.
template <typename scalar_t>
void tile_gradient(const TileBounds& tile, const at::Tensor& products, scalar_t s, scalar_t b, scalar_t weight,
                   const scalar_t* positive_products, int64_t label_offset, double& grad_scale_sum,
                   double& grad_bias_sum) {
  using Vec = Vectorized<scalar_t>;
  const int64_t tile_cols = tile.cols();
  scalar_t* data = products.mutable_data_ptr<scalar_t>();
  const int threads = at::get_num_threads();
  std::vector<double> scale_part(threads, 0.0), bias_part(threads, 0.0);
  at::parallel_for(0, tile.rows(), 16, [&](int64_t begin, int64_t end) {
    const Vec vs(s), vb(b), vw(weight), one(1), zero(0);
    Vec vscale_acc(0), vbias_acc(0);
    double scale_acc = 0, bias_acc = 0;
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* row = data + r * tile_cols;
      int64_t c = 0;
      for (; c + Vec::size() <= tile_cols; c += Vec::size()) {
        const Vec product = Vec::loadu(row + c);
        const Vec logit = at::vec::fmadd(product, vs, vb);
        const Vec grad = vw / (one + (zero - logit).exp());
        vscale_acc = at::vec::fmadd(grad, product, vscale_acc);
        vbias_acc += grad;
        // d loss / d products = d loss / d logits * scale, for the feature GEMMs.
        (grad * vs).store(row + c);
      }
      for (; c < tile_cols; ++c) {
        const scalar_t product = row[c];
        const scalar_t grad = weight / (scalar_t(1) + std::exp(-(product * s + b)));
        scale_acc += grad * product;
        bias_acc += grad;
        row[c] = grad * s;
      }
      const int64_t positive_col = tile.row_begin + r + label_offset - tile.col_begin;
      if (positive_col >= 0 && positive_col < tile_cols) {
        row[positive_col] -= weight * s;
        bias_acc -= weight;
        scale_acc -= weight * positive_products[tile.row_begin + r];
      }
    }
    const int thread = at::get_thread_num();
    scale_part[thread] += scale_acc + sum_lanes(vscale_acc);
    bias_part[thread] += bias_acc + sum_lanes(vbias_acc);
  });
  for (int t = 0; t < threads; ++t) {
    grad_scale_sum += scale_part[t];
    grad_bias_sum += bias_part[t];
  }
}

// The loss (when `loss` is given) and the gradients of `weight` * loss, in one pass over the tiles:
// each tile's softplus sum is read before its gradient overwrites it. Returns the gradients in the
// compute dtype (the scale's and bias's as double sums); those not in `mask` stay undefined.
struct SiglipGrads {
  at::Tensor image, text;
  double scale = 0, bias = 0;
};

SiglipGrads siglip_tiles(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                         const at::Tensor& logit_bias, int64_t label_offset, std::array<bool, 4> mask,
                         const at::Tensor& grad_loss, double* loss) {
  const auto options = image.options();
  const int64_t rows = image.size(0), cols = text.size(0);
  SiglipGrads grads;
  // Written by the first tile of each row (column) block, accumulated by the others.
  grads.image = mask[0] ? at::empty({rows, image.size(1)}, options) : at::Tensor();
  grads.text = mask[1] ? at::empty({cols, text.size(1)}, options) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "siglip_loss_cpu", [&] {
    const scalar_t s = scalar_value<scalar_t>(logit_scale), b = scalar_value<scalar_t>(logit_bias);
    const scalar_t weight = (grad_loss.defined() ? scalar_value<scalar_t>(grad_loss) : scalar_t(1)) / scalar_t(rows);
    // The raw products of the positive pairs: the loss's positive logits and their term of the
    // scale gradient.
    std::vector<scalar_t> positive_products(rows);
    row_dots<scalar_t>(image, text, label_offset, positive_products.data());
    double total = 0;
    for_each_product_tile(image, text, [&](const TileBounds& tile, const at::Tensor& products) {
      if (loss != nullptr) {
        total += softplus_sum<scalar_t>(products, s, b);
      }
      tile_gradient<scalar_t>(tile, products, s, b, weight, positive_products.data(), label_offset, grads.scale,
                              grads.bias);
      // products now holds d loss / d products for the tile.
      accumulate_feature_grads("siglip_loss.grad_image", "siglip_loss.grad_text", products, tile, image, text,
                               grads.image, grads.text);
    });
    if (loss != nullptr) {
      // Minus the positive logits, in the same pass's precision (double sums).
      for (int64_t r = 0; r < rows; ++r) {
        total -= static_cast<double>(positive_products[r] * s + b);
      }
      *loss = total / static_cast<double>(rows);
    }
  });
  return grads;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> siglip_loss_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& image_features, const at::Tensor& text_features,
    const at::Tensor& logit_scale, const at::Tensor& logit_bias, int64_t label_offset, std::array<bool, 4> mask) {
  // The loss computes in float32 (or float64) whatever autocast says: its tile GEMMs must not be
  // cast down to bfloat16 by an enclosing autocast region.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_pairwise_args(image_features, text_features, logit_scale, logit_bias, label_offset, false, true);
  const at::Tensor image = pairwise_operand(image_features), text = pairwise_operand(text_features);
  const SiglipGrads grads = siglip_tiles(image, text, logit_scale, logit_bias, label_offset, mask, grad_loss, nullptr);
  const auto empty = at::empty({0}, image_features.options());
  return {mask[0] ? grads.image.to(image_features.scalar_type()) : empty,
          mask[1] ? grads.text.to(text_features.scalar_type()) : empty,
          mask[2] ? at::full({}, grads.scale, logit_scale.options()) : empty,
          mask[3] ? at::full({}, grads.bias, logit_bias.options()) : empty};
}

// The loss and its gradients (of the loss itself: grad_loss = 1) in one pass over the tiles, each
// tile's GEMM run once rather than again in the backward; the gradients in the compute dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> siglip_loss_forward_with_grads_cpu(
    const at::Tensor& image_features, const at::Tensor& text_features, const at::Tensor& logit_scale,
    const at::Tensor& logit_bias, int64_t label_offset, std::array<bool, 4> mask) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_pairwise_args(image_features, text_features, logit_scale, logit_bias, label_offset, false, true);
  const at::Tensor image = pairwise_operand(image_features), text = pairwise_operand(text_features);
  double loss = 0;
  const SiglipGrads grads =
      siglip_tiles(image, text, logit_scale, logit_bias, label_offset, mask, at::Tensor(), &loss);
  // Outputs must not alias one another: an empty tensor of its own for each gradient left out.
  const auto empty = [&] { return at::empty({0}, image.options()); };
  return {at::scalar_tensor(loss, image.options()), mask[0] ? grads.image : empty(), mask[1] ? grads.text : empty(),
          mask[2] ? at::full({}, grads.scale, logit_scale.options()) : empty(),
          mask[3] ? at::full({}, grads.bias, logit_bias.options()) : empty()};
}

}  // namespace

MMFAST_CPU_KERNELS(m) {
  m.impl("siglip_loss_forward", &siglip_loss_forward_cpu);
  m.impl("siglip_loss_backward", &siglip_loss_backward_cpu);
  m.impl("siglip_loss_forward_with_grads", &siglip_loss_forward_with_grads_cpu);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
