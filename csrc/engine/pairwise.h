// Shared machinery of the pairwise (contrastive) losses: argument checks, and the tiles of the
// logit matrix logits = scale * image @ text.T + bias, computed a few at a time through ATen's GEMM
// engine (ATen / oneDNN, whichever is faster), one tile at a time, so that the B_image x B_text matrix never exists.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <cstdint>
#include <functional>
#include <optional>

namespace mmfast {

// The losses take two feature matrices; export the same limits as the list-taking ops.
constexpr int64_t kPairwiseInputs = 2;

// image [B, D], text [B_text, D] of one floating dtype (float32, float64, bfloat16) and device;
// logit_scale and logit_bias 0-dim floating tensors on that device (logit_bias may be absent
// unless `bias_required`). `square`: B_text == B and label_offset == 0 (the symmetric loss); else
// 0 <= label_offset <= B_text - B. Errors name the argument, with the Python checks' messages.
void check_pairwise_args(const at::Tensor& image, const at::Tensor& text, const at::Tensor& logit_scale,
                         const std::optional<at::Tensor>& logit_bias, int64_t label_offset, bool square,
                         bool bias_required);

// The dtype the losses compute in: float32 for bfloat16 / float16 features, else theirs.
at::ScalarType pairwise_compute_type(at::ScalarType features);

// The features as contiguous matrices of the compute dtype (a copy only when needed).
at::Tensor pairwise_operand(const at::Tensor& features);

// Rows and columns of one tile of the logit matrix.
struct TileBounds {
  int64_t row_begin, row_end, col_begin, col_end;
  int64_t rows() const { return row_end - row_begin; }
  int64_t cols() const { return col_end - col_begin; }
};

// Whether image @ text.T for `rows` images and `cols` texts is one tile (for_each_product_tile);
// with symbolic sizes (torch.compile), a guard on the bound.
bool single_product_tile(int64_t rows, int64_t cols);
bool single_product_tile(const c10::SymInt& rows, const c10::SymInt& cols);

// Calls `visit(bounds, products)` for every tile of image @ text.T, row blocks outer, column blocks
// inner, in order; `products` is the [rows, cols] tile of raw dot products (no scale or bias), a
// contiguous view of a buffer reused for every tile. Only one tile is alive at a time.
void for_each_product_tile(const at::Tensor& image, const at::Tensor& text,
                           const std::function<void(const TileBounds&, const at::Tensor&)>& visit);

// The feature gradients of one tile, given the tile's d loss / d products `grad` (the logits'
// gradient times the scale, which the ops' backward passes fold into the values they write):
// grad_image[rows] += grad @ text[cols] and grad_text[cols] += grad.T @ image[rows], each through
// the GEMM engine (tuned as the sites "<op>.grad_image" and "<op>.grad_text": their operands'
// layouts differ); undefined gradients are skipped. The gradients need no initial value: the
// first tile of each row block (column 0) and of each column block (row 0) writes them, as
// for_each_product_tile visits those first; where that tile spans the whole gradient, the gradient
// handle is replaced by the tile's product (so pass the handles the op returns).
void accumulate_feature_grads(const char* image_site, const char* text_site, const at::Tensor& grad,
                              const TileBounds& tile, const at::Tensor& image, const at::Tensor& text,
                              at::Tensor& grad_image, at::Tensor& grad_text);

}  // namespace mmfast
