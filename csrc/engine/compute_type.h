// How the CPU passes compute: reduced-precision values in float, float and double in their own
// type, converted per block on the stack.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

// In the capability's namespace: these templates compile to other code in each CPU capability's
// build (engine/cpu_capability.h), so the builds must not share their instances.
namespace mmfast::cpu {
namespace CPU_CAPABILITY {

template <typename scalar_t>
using compute_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Points at `n` values of `src` in compute_t: the data itself when no conversion is needed,
// otherwise a converted copy in `buffer`.
template <typename scalar_t>
const compute_t<scalar_t>* as_compute(const scalar_t* src, compute_t<scalar_t>* buffer, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, compute_t<scalar_t>>) {
    return src;
  } else {
    at::vec::convert(src, buffer, n);
    return buffer;
  }
}

// Where to write `n` results destined for `dst`: `dst` itself when no conversion is needed,
// otherwise `buffer`, to be stored with `store_from_compute`.
template <typename scalar_t>
compute_t<scalar_t>* compute_target(scalar_t* dst, compute_t<scalar_t>* buffer) {
  if constexpr (std::is_same_v<scalar_t, compute_t<scalar_t>>) {
    return dst;
  } else {
    return buffer;
  }
}

template <typename scalar_t>
void store_from_compute(const compute_t<scalar_t>* buffer, scalar_t* dst, int64_t n) {
  if constexpr (!std::is_same_v<scalar_t, compute_t<scalar_t>>) {
    at::vec::convert(buffer, dst, n);
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
