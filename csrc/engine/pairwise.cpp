#include "engine/pairwise.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "engine/checks.h"
#include "engine/segment_linear.h"

namespace mmfast {
namespace {

// Tile sides: 1024 x 1024 float32 products are 4 MiB, and a [1024, D] x [D, 1024] GEMM is large
// enough for MKL / oneDNN to run near peak on both cores.
constexpr int64_t kTileRows = 1024;
constexpr int64_t kTileCols = 1024;

void check_features(const at::Tensor& x, const char* argument) {
  TORCH_CHECK_VALUE(x.dim() == 2, argument, ": expected a 2-D tensor [B, D], got shape ", x.sizes());
  const auto type = x.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kDouble || type == at::kBFloat16, argument,
                   ": expected torch.float32, torch.float64 or torch.bfloat16, got ", dtype_name(type));
}

void check_scalar(const at::Tensor& value, const char* argument, const at::Tensor& like) {
  TORCH_CHECK_VALUE(value.dim() == 0, argument, ": expected a 0-dim tensor (a scalar), got shape ", value.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(value.scalar_type()), argument, ": expected a floating-point tensor, got ",
                   dtype_name(value.scalar_type()));
  TORCH_CHECK_VALUE(value.device() == like.device(), argument, ": expected device ", like.device(),
                    " like the features, got ", value.device());
}

}  // namespace

void check_pairwise_args(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                         const std::optional<at::Tensor>& logit_bias, int64_t label_offset, bool square,
                         bool bias_required) {
  check_features(image, "image_features");
  check_features(text, "text_features");
  TORCH_CHECK_TYPE(text.scalar_type() == image.scalar_type(), "text_features: expected dtype ",
                   dtype_name(image.scalar_type()), " like image_features, got ", dtype_name(text.scalar_type()));
  TORCH_CHECK_VALUE(text.device() == image.device(), "text_features: expected device ", image.device(),
                    " like image_features, got ", text.device());
  TORCH_CHECK_VALUE(text.size(1) == image.size(1), "text_features: expected feature dim ", image.size(1),
                    " like image_features, got ", text.size(1));
  TORCH_CHECK_VALUE(image.size(0) > 0, "image_features: expected a batch of at least 1 pair, got 0 rows");
  if (square) {
    TORCH_CHECK_VALUE(text.size(0) == image.size(0), "text_features: expected ", image.size(0),
                      " rows like image_features (one text per image), got ", text.size(0));
    TORCH_CHECK_VALUE(label_offset == 0, "label_offset: expected 0 for the symmetric loss, got ", label_offset);
  } else {
    TORCH_CHECK_VALUE(text.size(0) >= image.size(0), "text_features: expected at least ", image.size(0),
                      " rows (one text per image), got ", text.size(0));
    const int64_t most = text.size(0) - image.size(0);
    TORCH_CHECK_VALUE(label_offset >= 0 && label_offset <= most,
                      "label_offset: image row i pairs with text row i + label_offset, so expected 0 to ", most,
                      " for ", image.size(0), " images and ", text.size(0), " texts, got ", label_offset);
  }
  check_scalar(logit_scale, "logit_scale", image);
  const bool has_bias = logit_bias.has_value() && logit_bias->defined();
  TORCH_CHECK_TYPE(has_bias || !bias_required, "logit_bias: expected a 0-dim tensor or a float, got None");
  if (has_bias) {
    check_scalar(*logit_bias, "logit_bias", image);
  }
}

at::ScalarType pairwise_compute_type(at::ScalarType features) {
  return features == at::kBFloat16 || features == at::kHalf ? at::kFloat : features;
}

at::Tensor pairwise_operand(const at::Tensor& features) {
  return features.to(pairwise_compute_type(features.scalar_type())).contiguous();
}

bool single_product_tile(int64_t rows, int64_t cols) { return rows <= kTileRows && cols <= kTileCols; }

bool single_product_tile(const c10::SymInt& rows, const c10::SymInt& cols) {
  return rows.sym_le(c10::SymInt(kTileRows)).guard_bool(__FILE__, __LINE__) &&
         cols.sym_le(c10::SymInt(kTileCols)).guard_bool(__FILE__, __LINE__);
}

void for_each_product_tile(const at::Tensor& image, const at::Tensor& text,
                           const std::function<void(const TileBounds&, const at::Tensor&)>& visit) {
  const int64_t rows = image.size(0), cols = text.size(0);
  const int64_t tile_rows = std::min(rows, kTileRows), tile_cols = std::min(cols, kTileCols);
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t r1 = std::min(rows, r0 + tile_rows);
    const at::Tensor image_block = image.narrow(0, r0, r1 - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += tile_cols) {
      const int64_t c1 = std::min(cols, c0 + tile_cols);
      // image_block @ text_block.T is a linear layer of the text block: the engine times ATen
      // (MKL) against oneDNN for the size class and keeps the faster (oneDNN runs float32 GEMMs
      // about twice as fast as MKL on AMD EPYC CPUs). The tile is freed before the next one.
      const at::Tensor products = cpu::linear_on_fastest_engine(
          cpu::GemmSite{"pairwise.logits"}, image_block, text.narrow(0, c0, c1 - c0), std::nullopt, Activation::kNone);
      visit(TileBounds{r0, r1, c0, c1}, products.is_contiguous() ? products : products.contiguous());
    }
  }
}

namespace {

// The tuning variant of text_block_grad's choice (apart from the linear sites' activation variants).
constexpr int kTransposedTileVariant = 1 << 20;

// grad.T @ image_block ([cols, D]) on the faster of two layouts, timed per size class: ATen's mm
// takes the transposed tile as it is (BLAS's transa) and returns the product in row order; oneDNN
// copies a transposed input (a 4 MiB transpose per 1024 x 1024 tile, a third of its GEMM), so it
// runs (image_block.T @ grad).T = linear(image_block.T, grad.T).T, taking grad.T as a transposed
// weight, and returns the product transposed, which writing or adding back reads with a stride
// (a 256 x 256 float32 transpose copy takes about a quarter of its GEMM's time). On an AMD EPYC
// Zen 4 the first won at B = 256 and 1024, the second at 2048.
at::Tensor text_block_grad(const char* site, const at::Tensor& grad, const at::Tensor& image_block) {
  const cpu::TuneKey key{cpu::GemmSite{site}, grad.size(1),          image_block.size(1),
                         grad.size(0),        grad.scalar_type(), kTransposedTileVariant};
  return cpu::run_fastest(
      key, {{"aten", [&] { return at::mm(grad.t(), image_block); }},
            {"onednn", [&] {
               return cpu::onednn_linear(image_block.t(), grad.t(), std::nullopt, Activation::kNone).t();
             }}});
}

}  // namespace

void accumulate_feature_grads(const char* image_site, const char* text_site, const at::Tensor& grad,
                              const TileBounds& tile, const at::Tensor& image, const at::Tensor& text,
                              at::Tensor& grad_image, at::Tensor& grad_text) {
  // The first tile of a row block (column 0) writes its rows of grad_image, the others add to them;
  // likewise the first tile of a column block (row 0) for grad_text: no zero-filled start. A first
  // tile that spans the whole gradient (one tile along the other side) hands over its product
  // instead: a copy into the freshly allocated gradient costs its page faults too (about 30 us for
  // 256 x 256 float32, a sixth of that GEMM).
  const auto write_or_add = [](at::Tensor& gradient, int64_t begin, const at::Tensor& part, bool first) {
    if (first && part.size(0) == gradient.size(0) && part.is_contiguous() &&
        part.scalar_type() == gradient.scalar_type()) {
      gradient = part;
      return;
    }
    const at::Tensor destination = gradient.narrow(0, begin, part.size(0));
    if (first) {
      destination.copy_(part);
    } else {
      destination.add_(part);
    }
  };
  if (grad_image.defined()) {
    // grad @ text_block = linear(grad, text_block.T): the weight is [D, cols].
    write_or_add(grad_image, tile.row_begin,
                 cpu::linear_on_fastest_engine(cpu::GemmSite{image_site}, grad,
                                               text.narrow(0, tile.col_begin, tile.cols()).t(), std::nullopt,
                                               Activation::kNone),
                 tile.col_begin == 0);
  }
  if (grad_text.defined()) {
    write_or_add(grad_text, tile.col_begin,
                 text_block_grad(text_site, grad, image.narrow(0, tile.row_begin, tile.rows())),
                 tile.row_begin == 0);
  }
}

}  // namespace mmfast
