"""Argument builders for the fusion op tests (CPU and CUDA)."""

from __future__ import annotations

import torch


def gated_args(count, dim, lead, dtype, device="cpu", bias=True, requires_grad=True):
    """(inputs, weight, bias) for gated fusion of `count` inputs [*lead, dim]."""
    logits = dim if count == 2 else count * dim
    xs = [torch.randn(*lead, dim, dtype=dtype, device=device) for _ in range(count)]
    weight = torch.randn(logits, count * dim, dtype=dtype, device=device) / (count * dim) ** 0.5
    b = torch.randn(logits, dtype=dtype, device=device) if bias else None
    leaves = [*xs, weight] + ([b] if bias else [])
    for t in leaves:
        t.requires_grad_(requires_grad)
    return xs, weight, b


def attention_args(
    dims, out_dim, lead, dtype, device="cpu", proj_bias=True, score_bias=True, requires_grad=True
):
    """(inputs, proj_weights, proj_biases, score_weight, score_bias) for attention fusion."""
    xs = [torch.randn(*lead, d, dtype=dtype, device=device) for d in dims]
    projs = [torch.randn(out_dim, d, dtype=dtype, device=device) / d**0.5 for d in dims]
    biases = [torch.randn(out_dim, dtype=dtype, device=device) for _ in dims] if proj_bias else None
    score = torch.randn(len(dims), sum(dims), dtype=dtype, device=device) / sum(dims) ** 0.5
    sb = torch.randn(len(dims), dtype=dtype, device=device) if score_bias else None
    for t in [*xs, *projs, *(biases or []), score, *([sb] if score_bias else [])]:
        t.requires_grad_(requires_grad)
    return xs, projs, biases, score, sb


def leaves_of(args):
    """Every tensor in a nested argument list, in order."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(leaves_of(a))
    return out


def detached_copy(args, dtype=None):
    """The arguments as fresh leaves (optionally cast), keeping the nesting."""
    result = []
    for a in args:
        if isinstance(a, torch.Tensor):
            t = a.detach().to(dtype) if dtype is not None else a.detach().clone()
            result.append(t.requires_grad_())
        elif isinstance(a, (list, tuple)):
            result.append(detached_copy(a, dtype))
        else:
            result.append(a)
    return result
