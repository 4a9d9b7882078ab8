"""`concat_linear`: act(cat(inputs, -1) @ weight.T + bias) without building the concatenation.

Everything the Python side knows of the op is here: its reference (the definition), its argument
check (shared by the reference path and the fakes), its fake implementations and its descriptor.
The op is ``torch.ops.mmfast.concat_linear``; its schemas, C++ checks, autograd formula and CPU and
CUDA kernels are in ``csrc/ops/concat_linear/`` (the CUDA device code in ``kernels/``). Without the
compiled extension, or for a device it was not built for, the reference runs instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmfast.ops import _dispatch, _registry
from mmfast.ops._validation import check_like, check_tensor_list
from mmfast.ops.activations import NEEDS_PREACTIVATION, apply_activation, check_activation

__all__ = ["concat_linear", "concat_linear_reference"]


def concat_linear_reference(
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str = "none",
) -> torch.Tensor:
    """The definition of concat_linear in plain PyTorch (builds the concatenation)."""
    return apply_activation(F.linear(torch.cat(list(inputs), dim=-1), weight, bias), activation)


def check_concat_linear_args(
    inputs: object, weight: object, bias: object
) -> tuple[list[torch.Tensor], int, int]:
    """Validated inputs, in_features (sum of D_i) and out_features; the errors are those of the
    C++ checks."""
    low, high = DESCRIPTOR.input_limits()
    tensors = check_tensor_list(inputs, "inputs", high, min_count=low)
    in_features = sum(x.shape[-1] for x in tensors)
    if in_features == 0:
        raise ValueError("inputs: the feature dims sum to 0")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a tensor, got {type(weight).__name__}")
    if weight.dim() != 2 or weight.shape[1] != in_features:
        raise ValueError(
            f"weight: expected shape [out_features, {in_features}] (the inputs' feature dims sum to "
            f"{in_features}), got {list(weight.shape)}"
        )
    check_like(weight, "weight", tensors[0], weight.shape)
    out_features = weight.shape[0]
    if bias is not None:
        check_like(bias, "bias", tensors[0], [out_features])
    return tensors, in_features, out_features


def concat_linear(
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str = "none",
) -> torch.Tensor:
    """act(cat(inputs, -1) @ weight.T + bias), fused.

    Args:
        inputs: 1 to 16 tensors of shape ``[*, D_i]`` with the same leading dims, dtype and device.
        weight: ``[N, sum(D_i)]``.
        bias: ``[N]`` or None.
        activation: one of ``none, relu, gelu, gelu_tanh, silu, sigmoid, tanh``.

    Returns:
        ``[*, N]``. Differentiable (once: a second derivative raises) with respect to every
        input, ``weight`` and ``bias``; the backward keeps the inputs (never their concatenation)
        and the pre-activation only for gelu, gelu_tanh and silu.
    """
    check_activation(activation)
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, Sequence):
        raise TypeError(f"inputs: expected a sequence of tensors, got {type(inputs).__name__}")
    tensors = list(inputs)
    device = tensors[0].device if tensors and isinstance(tensors[0], torch.Tensor) else None
    if device is not None and _dispatch.implementation("concat_linear", device) == "compiled":
        # The op checks its arguments in C++ with the same messages; checking twice would cost
        # a tenth of a small call.
        return torch.ops.mmfast.concat_linear.default(tensors, weight, bias, activation)
    check_concat_linear_args(tensors, weight, bias)
    return concat_linear_reference(tensors, weight, bias, activation)


def _leading_shape(inputs: Sequence[torch.Tensor]) -> list[int]:
    return list(inputs[0].shape[:-1])


def _register_fakes() -> None:
    @torch.library.register_fake("mmfast::concat_linear_forward")
    def _forward_fake(inputs, weight, bias, activation, save_for_backward):
        check_activation(activation)
        tensors, _, out_features = check_concat_linear_args(inputs, weight, bias)
        shape = _leading_shape(tensors) + [out_features]
        output = tensors[0].new_empty(shape)
        keep = save_for_backward and activation in NEEDS_PREACTIVATION
        return output, tensors[0].new_empty(shape if keep else [0])

    @torch.library.register_fake("mmfast::concat_linear_backward")
    def _backward_fake(grad_output, inputs, weight, saved, activation, output_mask):
        check_activation(activation)
        out_features, in_features = weight.shape
        empty = grad_output.new_empty([0])
        grad_input = (
            grad_output.new_empty(list(grad_output.shape[:-1]) + [in_features]) if output_mask[0] else empty
        )
        grad_weight = grad_output.new_empty([out_features, in_features]) if output_mask[1] else empty
        grad_bias = grad_output.new_empty([out_features]) if output_mask[2] else empty
        return grad_input, grad_weight, grad_bias


DESCRIPTOR = _registry.register(
    _registry.OpDescriptor(
        name="concat_linear",
        summary="act(cat(inputs, -1) @ weight.T + bias) over 1..M inputs [*, D_i], never building the cat",
        reference=concat_linear_reference,
        compiled={
            "cpu": "cpp (oneDNN / ATen GEMM, at::vec epilogue)",
            "cuda": "cuda (ATen GEMM, CUDA epilogue)",
        },
        register_fakes=_register_fakes,
        min_inputs=1,
        triton="mmfast.triton.concat_linear",
    )
)
