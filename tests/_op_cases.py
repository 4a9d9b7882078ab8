"""One small problem per op, with its reference, for tests that treat the three ops alike.

``CASES[name] = (make_args(requires_grad), op, reference)``.
"""

from __future__ import annotations

import torch

from mmfast.ops import (
    attention_fusion,
    attention_fusion_reference,
    concat_linear,
    concat_linear_reference,
    gated_fusion,
    gated_fusion_reference,
)
from tests._fusion_cases import attention_args, gated_args


def _concat_args(requires_grad):
    xs = [torch.randn(6, d, requires_grad=requires_grad) for d in (7, 3, 5)]
    weight = (torch.randn(9, 15) / 15**0.5).requires_grad_(requires_grad)
    bias = torch.randn(9, requires_grad=requires_grad)
    return xs, weight, bias


CASES = {
    "concat_linear": (
        _concat_args,
        lambda *a: concat_linear(*a, activation="gelu"),
        lambda *a: concat_linear_reference(*a, activation="gelu"),
    ),
    "gated_fusion": (
        lambda rg: gated_args(3, 8, (6,), torch.float32, requires_grad=rg),
        gated_fusion,
        gated_fusion_reference,
    ),
    "attention_fusion": (
        lambda rg: attention_args([7, 3, 5], 9, (6,), torch.float32, requires_grad=rg),
        attention_fusion,
        attention_fusion_reference,
    ),
}
