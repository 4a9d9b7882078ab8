"""Argument checks run before any kernel, so that bad input fails with a message naming the
argument. The C++ ops check the same things for callers of `torch.ops.mmfast.*`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_CONCAT_INPUTS = 16


def check_tensor_list(
    inputs: object, argument: str = "inputs", max_count: int | None = None, min_count: int = 1
) -> list[torch.Tensor]:
    """A non-empty list of floating-point tensors of one dtype and device, each at least 1-D."""
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, Sequence):
        raise TypeError(f"{argument}: expected a sequence of tensors, got {type(inputs).__name__}")
    tensors = list(inputs)
    if len(tensors) < min_count or (max_count is not None and len(tensors) > max_count):
        limit = f"{min_count} to {max_count}" if max_count is not None else f"at least {min_count}"
        raise ValueError(f"{argument}: expected {limit} tensors, got {len(tensors)}")
    first = tensors[0]
    for i, x in enumerate(tensors):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{argument}[{i}]: expected a tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{argument}[{i}]: expected a floating-point tensor, got {x.dtype}")
        if x.dim() < 1:
            raise ValueError(f"{argument}[{i}]: expected a tensor of shape [*, D], got a 0-d tensor")
        if x.dtype != first.dtype:
            raise TypeError(
                f"{argument}[{i}]: expected dtype {first.dtype} like {argument}[0], got {x.dtype}"
            )
        if x.device != first.device:
            raise ValueError(
                f"{argument}[{i}]: expected device {first.device} like {argument}[0], got {x.device}"
            )
        if x.shape[:-1] != first.shape[:-1]:
            raise ValueError(
                f"{argument}[{i}]: leading dims {list(x.shape[:-1])} differ from "
                f"{argument}[0]'s {list(first.shape[:-1])}"
            )
    return tensors


def check_like(tensor: object, argument: str, reference: torch.Tensor, shape: Sequence[int]) -> None:
    """`tensor` is a tensor with `reference`'s dtype and device and exactly `shape`."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{argument}: expected a tensor, got {type(tensor).__name__}")
    if tensor.dtype != reference.dtype:
        raise TypeError(f"{argument}: expected dtype {reference.dtype} like the inputs, got {tensor.dtype}")
    if tensor.device != reference.device:
        raise ValueError(
            f"{argument}: expected device {reference.device} like the inputs, got {tensor.device}"
        )
    if list(tensor.shape) != list(shape):
        raise ValueError(f"{argument}: expected shape {list(shape)}, got {list(tensor.shape)}")


def check_concat_linear_args(
    inputs: object, weight: object, bias: object
) -> tuple[list[torch.Tensor], int, int]:
    """Validated inputs, in_features (sum of D_i) and out_features."""
    tensors = check_tensor_list(inputs, "inputs", MAX_CONCAT_INPUTS)
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


MAX_FUSION_INPUTS = 16


def check_gated_fusion_args(inputs: object, weight: object, bias: object) -> tuple[list[torch.Tensor], int]:
    """Validated inputs and the number of gate logits (D for two inputs, M*D else)."""
    tensors = check_tensor_list(inputs, "inputs", MAX_FUSION_INPUTS, min_count=2)
    count = len(tensors)
    dim = tensors[0].shape[-1]
    for i, x in enumerate(tensors[1:], start=1):
        if x.shape[-1] != dim:
            raise ValueError(
                f"inputs[{i}]: expected feature dim {dim} like inputs[0] (gated fusion blends inputs of "
                f"one size), got {x.shape[-1]}"
            )
    if dim == 0:
        raise ValueError("inputs: expected a feature dim of at least 1, got 0")
    logits = dim if count == 2 else count * dim
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a tensor, got {type(weight).__name__}")
    if list(weight.shape) != [logits, count * dim]:
        form = "[D, 2D] for two inputs" if count == 2 else "[M*D, M*D]"
        raise ValueError(
            f"weight: expected shape [{logits}, {count * dim}] for {count} inputs of dim {dim} ({form}), "
            f"got {list(weight.shape)}"
        )
    check_like(weight, "weight", tensors[0], weight.shape)
    if bias is not None:
        check_like(bias, "bias", tensors[0], [logits])
    return tensors, logits


def check_attention_fusion_args(
    inputs: object,
    proj_weights: object,
    proj_biases: object,
    score_weight: object,
    score_bias: object,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], int]:
    """Validated inputs, projection weights and biases (empty for None) and D_out."""
    tensors = check_tensor_list(inputs, "inputs", MAX_FUSION_INPUTS)
    count = len(tensors)
    weights = parameter_list(proj_weights, "proj_weights", count)
    if weights[0].dim() != 2:
        raise ValueError(
            f"proj_weights[0]: expected shape [D_out, {tensors[0].shape[-1]}], got {list(weights[0].shape)}"
        )
    out_dim = weights[0].shape[0]
    for m, (w, x) in enumerate(zip(weights, tensors)):
        check_like(w, f"proj_weights[{m}]", tensors[0], [out_dim, x.shape[-1]])
    biases = [] if proj_biases is None else parameter_list(proj_biases, "proj_biases", count)
    for m, b in enumerate(biases):
        check_like(b, f"proj_biases[{m}]", tensors[0], [out_dim])
    check_like(score_weight, "score_weight", tensors[0], [count, sum(x.shape[-1] for x in tensors)])
    if score_bias is not None:
        check_like(score_bias, "score_bias", tensors[0], [count])
    return tensors, weights, biases, out_dim


def parameter_list(values: object, argument: str, count: int) -> list[torch.Tensor]:
    """`values` as a list of `count` tensors, one per input."""
    if isinstance(values, torch.Tensor) or not isinstance(values, Sequence):
        raise TypeError(f"{argument}: expected a sequence of {count} tensors, got {type(values).__name__}")
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{argument}: expected {count} tensors (one per input), got {len(values)}")
    for i, v in enumerate(values):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{argument}[{i}]: expected a tensor, got {type(v).__name__}")
    return values


def as_list(values: object, argument: str) -> list:
    """`values` as a list, or a TypeError naming `argument` when it is not a sequence (a tensor is
    not: iterating it would split its first dim)."""
    if isinstance(values, torch.Tensor) or not isinstance(values, Sequence):
        raise TypeError(f"{argument}: expected a sequence of tensors, got {type(values).__name__}")
    return list(values)


def first_device(tensors: list) -> torch.device | None:
    """The device of the first tensor, or None when there is none to look at."""
    return tensors[0].device if tensors and isinstance(tensors[0], torch.Tensor) else None
