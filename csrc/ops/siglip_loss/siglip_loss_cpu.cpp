// siglip_loss on the CPU (definition: mmfast/ops/siglip_loss.py).
//
// With labels y = 2 * [positive pair] - 1, softplus(-y * L) = softplus(L) - L at the positive pairs,
// so the loss is (sum over every logit of softplus(L) - sum of the positive logits) / B: one pass
// over the tiles of the logit matrix (engine/pairwise.h), nothing kept. The backward passes over the
// tiles again: d loss / d L = g * (sigmoid(L) - [positive]) / B in one vectorized pass, then two
// GEMMs per tile accumulate the feature gradients; the scale and bias gradients are sums over the
// same pass.
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> siglip_loss_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& image_features, const at::Tensor& text_features,
    const at::Tensor& logit_scale, const at::Tensor& logit_bias, int64_t label_offset, std::array<bool, 4> mask) {
  // The loss computes in float32 (or float64) whatever autocast says: its tile GEMMs must not be
  // cast down to bfloat16 by an enclosing autocast region.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_pairwise_args(image_features, text_features, logit_scale, logit_bias, label_offset, false, true);
  const at::Tensor image = pairwise_operand(image_features), text = pairwise_operand(text_features);
  const auto options = image.options();
  const int64_t rows = image.size(0), cols = text.size(0);
  // Written by the first tile of each row (column) block, accumulated by the others.
  at::Tensor grad_image = mask[0] ? at::empty({rows, image.size(1)}, options) : at::Tensor();
  at::Tensor grad_text = mask[1] ? at::empty({cols, text.size(1)}, options) : at::Tensor();
  double grad_scale_sum = 0, grad_bias_sum = 0;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "siglip_loss_backward_cpu", [&] {
    using Vec = Vectorized<scalar_t>;
    const scalar_t s = scalar_value<scalar_t>(logit_scale), b = scalar_value<scalar_t>(logit_bias);
    const scalar_t weight = scalar_value<scalar_t>(grad_loss) / scalar_t(rows);
    // The raw products of the positive pairs, for their term of the scale gradient.
    std::vector<scalar_t> positive_products(rows);
    row_dots<scalar_t>(image, text, label_offset, positive_products.data());
    const scalar_t* pp = positive_products.data();
    for_each_product_tile(image, text, [&](const TileBounds& tile, const at::Tensor& products) {
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
            scale_acc -= weight * pp[tile.row_begin + r];
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
      // products now holds d loss / d products for the tile.
      accumulate_feature_grads("siglip_loss.grad_image", "siglip_loss.grad_text", products, tile, image, text,
                               grad_image, grad_text);
    });
  });
  const auto empty = at::empty({0}, image_features.options());
  return {mask[0] ? grad_image.to(image_features.scalar_type()) : empty,
          mask[1] ? grad_text.to(text_features.scalar_type()) : empty,
          mask[2] ? at::full({}, grad_scale_sum, logit_scale.options()) : empty,
          mask[3] ? at::full({}, grad_bias_sum, logit_bias.options()) : empty};
}

}  // namespace

MMFAST_CPU_KERNELS(m) {
  m.impl("siglip_loss_forward", &siglip_loss_forward_cpu);
  m.impl("siglip_loss_backward", &siglip_loss_backward_cpu);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
