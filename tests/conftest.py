"""Shared test set-up: the Triton interpreter on machines without a GPU, a fixed seed per test."""

from __future__ import annotations

import os
import random

import torch

# Read when @triton.jit decorates, so it must be set before any test module imports a kernel.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
