// Small helpers of the vectorized CPU passes: lane-wise reductions of an at::vec vector (ATen's
// Vectorized<double> has no reduce_add / reduce_max) and a 0-dim tensor read as a C++ scalar.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

// In the capability's namespace: these templates compile to other code in each CPU capability's
// build (engine/cpu_capability.h), so the builds must not share their instances.
namespace mmfast::cpu {
namespace CPU_CAPABILITY {

template <typename scalar_t>
scalar_t sum_lanes(const at::vec::Vectorized<scalar_t>& v) {
  alignas(64) scalar_t lanes[at::vec::Vectorized<scalar_t>::size()];
  v.store(lanes);
  scalar_t total = 0;
  for (int i = 0; i < at::vec::Vectorized<scalar_t>::size(); ++i) {
    total += lanes[i];
  }
  return total;
}

template <typename scalar_t>
scalar_t max_lanes(const at::vec::Vectorized<scalar_t>& v) {
  alignas(64) scalar_t lanes[at::vec::Vectorized<scalar_t>::size()];
  v.store(lanes);
  scalar_t best = lanes[0];
  for (int i = 1; i < at::vec::Vectorized<scalar_t>::size(); ++i) {
    best = std::max(best, lanes[i]);
  }
  return best;
}

// A 0-dim tensor's value as scalar_t.
template <typename scalar_t>
scalar_t scalar_value(const at::Tensor& t) {
  return t.to(c10::CppTypeToScalarType<scalar_t>::value).template item<scalar_t>();
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
