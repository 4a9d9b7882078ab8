"""The learning-rate schedule: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per optimizer step: the factor rises linearly from 1/warmup to 1 over
    the first ``warmup_ratio * total_steps`` steps, then follows a half cosine down to 0."""
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0
    total = max(total_steps, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
