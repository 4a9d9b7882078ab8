"""Argument checks shared by the ops' Python checks (``mmfast/ops/<op>.py``), which the reference
path and the fake implementations run before anything else, so that bad input fails with a
message naming the argument. The compiled ops check the same things in C++ (``csrc/ops/<op>/``)
with the same messages; the count limits come from there (`OpDescriptor.input_limits`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_tensor_list(
    inputs: object, argument: str = "inputs", max_count: int | None = None, min_count: int = 1
) -> list[torch.Tensor]:
    """``min_count`` to ``max_count`` (None: any number) floating-point tensors of one dtype,
    device and leading dims, each at least 1-D."""
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
