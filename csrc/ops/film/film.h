// film's argument checks and problem sizes, shared by its schema file and its CPU kernel
// (definition: mmfast/ops/film.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "engine/checks.h"

namespace mmfast {

// One feature map per call (the limits `mmfast info` shows).
constexpr InputLimits kFilmLimits{1, 1};

struct FilmShape {
  int64_t batch = 0;     // B
  int64_t channels = 0;  // C
  int64_t spatial = 0;   // product of the spatial dims (1 for features [B, C])
  int64_t cond_dim = 0;  // K
};

// features [B, C, *spatial]; condition [B, K]; weight [2C, K]; bias [2C] or None; one floating
// dtype and device.
FilmShape check_film_args(const at::Tensor& features, const at::Tensor& condition, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias);

// Whether `map` [B, C, *spatial] is stored channels last: each sample a dense [*spatial, C] block
// (torch.channels_last / channels_last_3d, or a [B, L, C] tensor transposed to [B, C, L]) and not
// also plainly contiguous (C == 1, one position). The op's output (and the feature gradient) keeps
// that layout, as ATen's element-wise ops do; mmfast/triton/_layout.py (stored_channels_last, for the
// fakes and the Triton launcher) is the same rule.
bool film_channels_last(const at::Tensor& map);

// `map` in the layout film_channels_last describes (channels_last) or contiguous, copied if need be.
at::Tensor film_in_layout(const at::Tensor& map, bool channels_last);

// An uninitialised tensor of `like`'s shape, dtype and device in that layout.
at::Tensor film_empty_in_layout(const at::Tensor& like, bool channels_last);

}  // namespace mmfast
