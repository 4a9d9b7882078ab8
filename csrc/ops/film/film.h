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

}  // namespace mmfast
