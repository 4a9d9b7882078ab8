"""Every CPU GEMM strategy of the fusion ops, forced one at a time, against the references.

The engine is chosen per shape by timing at first use, so an ordinary test run exercises only
the winners on this machine; `mmfast.ops.cpu_gemm.force` makes every GEMM that offers a strategy
run it (in-process: the state is the tuner's, not the process's)."""

from __future__ import annotations

import pytest
import torch

from mmfast import _backend
from mmfast.ops import (
    attention_fusion,
    attention_fusion_reference,
    cpu_gemm,
    gated_fusion,
    gated_fusion_reference,
)
from tests._fusion_cases import attention_args, detached_copy, gated_args, leaves_of
from tests._tolerances import CPU_ENGINES, assert_scaled_error

pytestmark = pytest.mark.skipif(not _backend.extension_loaded(), reason="compiled extension not built")

ENGINES = cpu_gemm.engines() if _backend.extension_loaded() else []
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# 1..4 rows take segment_gemv where forced; odd widths leave partial vectors.
LEADS = [(1,), (3,), (2, 2), (7,), (1, 5)]


def _check(fused, reference, args, dtype, engine):
    fused_args = detached_copy(args)
    ref_args = detached_copy(args)
    y = fused(*fused_args)
    r = reference(*ref_args)
    g = torch.randn_like(r)
    got = torch.autograd.grad(y, leaves_of(fused_args), g)
    want = torch.autograd.grad(r, leaves_of(ref_args), g)
    for index, (a, e) in enumerate(zip((y, *got), (r, *want))):
        assert_scaled_error(a, e, CPU_ENGINES[dtype], (engine, fused.__name__, dtype, tuple(a.shape), index))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_fusion_matches_reference_on_every_cpu_engine(engine, dtype):
    with cpu_gemm.force(engine):
        for lead in LEADS:
            for proj_bias in (True, False):
                args = attention_args((37, 300, 8), 19, lead, dtype, proj_bias=proj_bias)
                _check(attention_fusion, attention_fusion_reference, list(args), dtype, engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gated_fusion_matches_reference_on_every_cpu_engine(engine, dtype):
    with cpu_gemm.force(engine):
        for lead in LEADS:
            for count in (2, 3):
                args = list(gated_args(count, 21, lead, dtype))
                _check(gated_fusion, gated_fusion_reference, args, dtype, engine)
