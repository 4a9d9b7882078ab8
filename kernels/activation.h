// Activation math shared by the CPU kernels (scalar and at::vec) and the CUDA kernels.
//
// This header is the single definition of every activation and its derivative. It must stay free
// of PyTorch headers so that `nvcc -I kernels` compiles the device code on its own. Formulas are
// templates over the value type `T` and a math policy `Math` that supplies the transcendental
// functions, so the same expression serves `float` on a GPU thread and `at::vec::Vectorized<float>`
// on the CPU.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define MMFAST_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MMFAST_HOST_DEVICE inline
#endif

namespace mmfast {

enum class Activation : int {
  kNone = 0,
  kRelu = 1,
  kGelu = 2,      // exact, erf-based
  kGeluTanh = 3,  // tanh approximation
  kSilu = 4,
  kSigmoid = 5,
  kTanh = 6,
};

constexpr int kNumActivations = 7;

// Names as users spell them; the index is the enum value.
constexpr const char* kActivationNames[kNumActivations] = {
    "none", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh"};

// What the backward pass needs to compute act'(.): relu, sigmoid and tanh derive it from their
// output, gelu and silu need the pre-activation, the identity needs nothing.
enum class SavedForBackward : int { kNothing = 0, kPreactivation = 1, kOutput = 2 };

MMFAST_HOST_DEVICE constexpr SavedForBackward saved_for_backward(Activation act) {
  return act == Activation::kNone ? SavedForBackward::kNothing
         : (act == Activation::kGelu || act == Activation::kGeluTanh || act == Activation::kSilu)
             ? SavedForBackward::kPreactivation
             : SavedForBackward::kOutput;
}

// Scalar math for float and double, usable on host and device.
struct ScalarMath {
  MMFAST_HOST_DEVICE static float exp(float x) { return ::expf(x); }
  MMFAST_HOST_DEVICE static double exp(double x) { return ::exp(x); }
  MMFAST_HOST_DEVICE static float erf(float x) { return ::erff(x); }
  MMFAST_HOST_DEVICE static double erf(double x) { return ::erf(x); }
  MMFAST_HOST_DEVICE static float tanh(float x) { return ::tanhf(x); }
  MMFAST_HOST_DEVICE static double tanh(double x) { return ::tanh(x); }
  template <typename T>
  MMFAST_HOST_DEVICE static T max(T a, T b) { return a > b ? a : b; }
  template <typename T>
  MMFAST_HOST_DEVICE static T min(T a, T b) { return a < b ? a : b; }
  template <typename T>
  MMFAST_HOST_DEVICE static T relu(T x) { return x > T(0) ? x : T(0); }
  // 1 where y > 0, else 0 (relu's derivative read off its output).
  template <typename T>
  MMFAST_HOST_DEVICE static T positive_indicator(T y) { return y > T(0) ? T(1) : T(0); }
};

namespace activation_detail {
// Constants in double; each formula converts them to T.
constexpr double kSqrtHalf = 0.70710678118654752440;        // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;      // 1 / sqrt(2 * pi)
constexpr double kSqrt2OverPi = 0.79788456080286535588;     // sqrt(2 / pi)
constexpr double kGeluTanhCubic = 0.044715;
// exp() arguments are floored here: below about -87 a float exp() is denormal, and denormal
// arithmetic runs tens of times slower on x86 CPUs. exp(-80) is 2e-35, which every formula below
// adds to or multiplies by a value of order one or less, so no float result changes.
constexpr double kExpFloor = -80.0;
// erf(x) is +-1 to the last bit of a double for |x| >= 6, and implementations evaluate it through
// exp(-x*x), which turns denormal near |x| = 9.4: saturating the argument keeps them fast.
constexpr double kErfSaturation = 6.0;
}  // namespace activation_detail

template <typename T, typename Math>
MMFAST_HOST_DEVICE T floored_exp(T x) {
  return Math::exp(Math::max(x, T(activation_detail::kExpFloor)));
}

template <typename T, typename Math>
MMFAST_HOST_DEVICE T saturated_erf(T x) {
  using activation_detail::kErfSaturation;
  return Math::erf(Math::min(Math::max(x, T(-kErfSaturation)), T(kErfSaturation)));
}

template <typename T, typename Math>
MMFAST_HOST_DEVICE T sigmoid(T x) {
  return T(1) / (T(1) + floored_exp<T, Math>(T(0) - x));
}

template <typename T, typename Math>
MMFAST_HOST_DEVICE T gelu_tanh_inner(T x) {
  using namespace activation_detail;
  return T(kSqrt2OverPi) * (x + T(kGeluTanhCubic) * x * x * x);
}

// act(x).
template <Activation A, typename T, typename Math = ScalarMath>
MMFAST_HOST_DEVICE T activation_forward(T x) {
  using namespace activation_detail;
  if constexpr (A == Activation::kNone) {
    return x;
  } else if constexpr (A == Activation::kRelu) {
    return Math::relu(x);
  } else if constexpr (A == Activation::kGelu) {
    return T(0.5) * x * (T(1) + saturated_erf<T, Math>(x * T(kSqrtHalf)));
  } else if constexpr (A == Activation::kGeluTanh) {
    return T(0.5) * x * (T(1) + Math::tanh(gelu_tanh_inner<T, Math>(x)));
  } else if constexpr (A == Activation::kSilu) {
    return x * sigmoid<T, Math>(x);
  } else if constexpr (A == Activation::kSigmoid) {
    return sigmoid<T, Math>(x);
  } else {
    static_assert(A == Activation::kTanh, "unhandled activation");
    return Math::tanh(x);
  }
}

// grad * act'(.), where `saved` is what saved_for_backward(A) names: the pre-activation for gelu,
// gelu_tanh and silu, the output for relu, sigmoid and tanh (ignored for none).
template <Activation A, typename T, typename Math = ScalarMath>
MMFAST_HOST_DEVICE T activation_backward(T grad, T saved) {
  using namespace activation_detail;
  if constexpr (A == Activation::kNone) {
    return grad;
  } else if constexpr (A == Activation::kRelu) {
    return grad * Math::positive_indicator(saved);
  } else if constexpr (A == Activation::kGelu) {
    const T x = saved;
    const T cdf = T(0.5) * (T(1) + saturated_erf<T, Math>(x * T(kSqrtHalf)));
    const T pdf = T(kInvSqrt2Pi) * floored_exp<T, Math>(T(-0.5) * x * x);
    return grad * (cdf + x * pdf);
  } else if constexpr (A == Activation::kGeluTanh) {
    const T x = saved;
    const T t = Math::tanh(gelu_tanh_inner<T, Math>(x));
    const T dinner = T(kSqrt2OverPi) * (T(1) + T(3.0 * kGeluTanhCubic) * x * x);
    return grad * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner);
  } else if constexpr (A == Activation::kSilu) {
    const T x = saved;
    const T s = sigmoid<T, Math>(x);
    return grad * (s * (T(1) + x * (T(1) - s)));
  } else if constexpr (A == Activation::kSigmoid) {
    return grad * (saved * (T(1) - saved));
  } else {
    static_assert(A == Activation::kTanh, "unhandled activation");
    return grad * (T(1) - saved * saved);
  }
}

// Calls f(std::integral_constant-like tag) with the activation as a compile-time constant, so hot
// loops are instantiated once per activation instead of switching per element.
template <Activation A>
struct ActivationTag {
  static constexpr Activation value = A;
};

template <typename F>
MMFAST_HOST_DEVICE void dispatch_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::kNone: f(ActivationTag<Activation::kNone>{}); break;
    case Activation::kRelu: f(ActivationTag<Activation::kRelu>{}); break;
    case Activation::kGelu: f(ActivationTag<Activation::kGelu>{}); break;
    case Activation::kGeluTanh: f(ActivationTag<Activation::kGeluTanh>{}); break;
    case Activation::kSilu: f(ActivationTag<Activation::kSilu>{}); break;
    case Activation::kSigmoid: f(ActivationTag<Activation::kSigmoid>{}); break;
    case Activation::kTanh: f(ActivationTag<Activation::kTanh>{}); break;
  }
}

}  // namespace mmfast
