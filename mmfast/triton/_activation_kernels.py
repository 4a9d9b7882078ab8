"""The activations of `mmfast.ops.activations` as Triton device functions, for kernel epilogues.

The same math as the C++ / CUDA kernels (`kernels/activation.h`): exp() arguments floored at -80
(denormals), erf saturated at +-6, the derivative read off the pre-activation for gelu, gelu_tanh
and silu and off the output for relu, sigmoid and tanh. Activations are selected by their index in
`mmfast.ops.activations.ACTIVATIONS`, which is the C++ enum's value (`activation_id`).
"""

from __future__ import annotations

import triton
import triton.language as tl

from mmfast.ops.activations import ACTIVATIONS, check_activation

_SQRT_HALF = tl.constexpr(0.70710678118654752440)
_INV_SQRT_2PI = tl.constexpr(0.39894228040143267794)
_SQRT_2_OVER_PI = tl.constexpr(0.79788456080286535588)
_GELU_TANH_CUBIC = tl.constexpr(0.044715)
_EXP_FLOOR = tl.constexpr(-80.0)
_ERF_SATURATION = tl.constexpr(6.0)
# Below this |x| tanh is its odd Taylor series to x^13 (relative error under 1e-11 there); above,
# (1 - e) / (1 + e) with e = exp(-2|x|), whose cancellation costs at most ~1e-7 relative at 0.25.
# (libdevice's tanh would do, but triton's interpreter, which the CPU tests run, has no libdevice.)
# The constants stand right of the tensors they scale: the interpreter turns constexpr * tensor into a
# constexpr holding a tensor, which later ops reject.
_TANH_SERIES_LIMIT = tl.constexpr(0.25)


def activation_id(activation: str) -> int:
    """The constexpr that selects ``activation`` in the kernels (the C++ enum's value)."""
    return ACTIVATIONS.index(check_activation(activation))


# Globals that @triton.jit functions read must be constexprs.
NONE, RELU, GELU, GELU_TANH, SILU, SIGMOID, TANH = (tl.constexpr(activation_id(name)) for name in ACTIVATIONS)


@triton.jit
def _floored_exp(x):
    return tl.exp(tl.maximum(x, _EXP_FLOOR))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + _floored_exp(-x))


@triton.jit
def _tanh(x):
    magnitude = tl.where(x < 0, -x, x)
    square = x * x
    series = x * (
        1.0
        + square
        * (
            -1.0 / 3.0
            + square
            * (
                2.0 / 15.0
                + square
                * (
                    -17.0 / 315.0
                    + square
                    * (62.0 / 2835.0 + square * (-1382.0 / 155925.0 + square * (21844.0 / 6081075.0)))
                )
            )
        )
    )
    e = tl.exp(-2.0 * magnitude)
    large = (1.0 - e) / (1.0 + e)
    large = tl.where(x < 0, -large, large)
    return tl.where(magnitude < _TANH_SERIES_LIMIT, series, large)


@triton.jit
def _gelu_tanh_inner(x):
    return (x + x * x * x * _GELU_TANH_CUBIC) * _SQRT_2_OVER_PI


@triton.jit
def _saturated_erf(x):
    return tl.math.erf(tl.minimum(tl.maximum(x, -_ERF_SATURATION), _ERF_SATURATION))


@triton.jit
def activation_forward(x, ACTIVATION: tl.constexpr):
    """act(x) for float32 ``x``."""
    if ACTIVATION == RELU:
        return tl.maximum(x, 0.0)
    elif ACTIVATION == GELU:
        return 0.5 * x * (1.0 + _saturated_erf(x * _SQRT_HALF))
    elif ACTIVATION == GELU_TANH:
        return 0.5 * x * (1.0 + _tanh(_gelu_tanh_inner(x)))
    elif ACTIVATION == SILU:
        return x * _sigmoid(x)
    elif ACTIVATION == SIGMOID:
        return _sigmoid(x)
    elif ACTIVATION == TANH:
        return _tanh(x)
    else:
        return x


@triton.jit
def activation_backward(grad, saved, ACTIVATION: tl.constexpr):
    """grad * act'(.) for float32 operands; ``saved`` is the pre-activation (gelu, gelu_tanh,
    silu) or the output (relu, sigmoid, tanh)."""
    if ACTIVATION == RELU:
        return tl.where(saved > 0, grad, 0.0)
    elif ACTIVATION == GELU:
        cdf = 0.5 * (1.0 + _saturated_erf(saved * _SQRT_HALF))
        pdf = _floored_exp(-0.5 * saved * saved) * _INV_SQRT_2PI
        return grad * (cdf + saved * pdf)
    elif ACTIVATION == GELU_TANH:
        t = _tanh(_gelu_tanh_inner(saved))
        dinner = (1.0 + saved * saved * (3.0 * _GELU_TANH_CUBIC)) * _SQRT_2_OVER_PI
        return grad * (0.5 * (1.0 + t) + 0.5 * saved * (1.0 - t * t) * dinner)
    elif ACTIVATION == SILU:
        s = _sigmoid(saved)
        return grad * (s * (1.0 + saved * (1.0 - s)))
    elif ACTIVATION == SIGMOID:
        return grad * (saved * (1.0 - saved))
    elif ACTIVATION == TANH:
        return grad * (1.0 - saved * saved)
    else:
        return grad
