// Prints act(x) and grad * act'(saved) with kernels/activation.h's ScalarMath, the path the CUDA
// kernels take, so that the CPU test suite checks the same formulas. Reads `T` (float|double)
// from argv[1], then "activation x grad" triples from stdin; `saved` is what the activation's
// backward reads (pre-activation or output), computed here from x.
#include <cstdio>
#include <cstring>

#include "activation.h"

namespace {

template <mmfast::Activation A, typename T>
void evaluate(T x, T grad) {
  const T y = mmfast::activation_forward<A, T>(x);
  const T saved = mmfast::saved_for_backward(A) == mmfast::SavedForBackward::kOutput ? y : x;
  std::printf("%.17g %.17g\n", static_cast<double>(y),
              static_cast<double>(mmfast::activation_backward<A, T>(grad, saved)));
}

template <typename T>
int run() {
  int activation = 0;
  double x = 0.0;
  double grad = 0.0;
  while (std::scanf("%d %lf %lf", &activation, &x, &grad) == 3) {
    if (activation < 0 || activation >= mmfast::kNumActivations) {
      return 2;
    }
    mmfast::dispatch_activation(static_cast<mmfast::Activation>(activation), [&](auto tag) {
      evaluate<decltype(tag)::value, T>(static_cast<T>(x), static_cast<T>(grad));
    });
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "float") == 0) {
    return run<float>();
  }
  if (argc == 2 && std::strcmp(argv[1], "double") == 0) {
    return run<double>();
  }
  std::fprintf(stderr, "usage: %s float|double < triples\n", argv[0]);
  return 2;
}
