// Small helpers of the vectorized CPU passes: lane-wise reductions of an at::vec vector (ATen's
// Vectorized<double> has no reduce_add / reduce_max) and a 0-dim tensor read as a C++ scalar.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

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

// out[r] = <a[r], b[r + offset]> for each row r of a ([rows, D], b [>= rows + offset, D], both
// contiguous): the positive pairs' products of the pairwise losses, in one vectorized pass instead
// of a multiply, a sum and their allocations (which cost more than the arithmetic at small B).
// Parallel over rows only where the rows hold enough work to pay for the threads.
template <typename scalar_t>
void row_dots(const at::Tensor& a, const at::Tensor& b, int64_t offset, scalar_t* out) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t rows = a.size(0), dim = a.size(1);
  const scalar_t* a_data = a.const_data_ptr<scalar_t>();
  const scalar_t* b_data = b.const_data_ptr<scalar_t>() + offset * dim;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(dim, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* x = a_data + r * dim;
      const scalar_t* y = b_data + r * dim;
      Vec acc(0);
      int64_t d = 0;
      for (; d + Vec::size() <= dim; d += Vec::size()) {
        acc = at::vec::fmadd(Vec::loadu(x + d), Vec::loadu(y + d), acc);
      }
      scalar_t total = sum_lanes(acc);
      for (; d < dim; ++d) {
        total += x[d] * y[d];
      }
      out[r] = total;
    }
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace mmfast::cpu
