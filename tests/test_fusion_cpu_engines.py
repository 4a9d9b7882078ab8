"""Every CPU GEMM strategy of the fusion ops, forced one at a time, against the references.

The engine is chosen per shape by timing at first use, so an ordinary test run exercises only
the winners on this machine; MMFAST_CPU_GEMM forces one strategy wherever a GEMM offers it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mmfast import _backend

pytestmark = pytest.mark.skipif(not _backend.extension_loaded(), reason="compiled extension not built")

SCRIPT = textwrap.dedent(
    """
    import torch
    from mmfast.ops import attention_fusion, gated_fusion
    from mmfast.ops import attention_fusion_reference, gated_fusion_reference
    from tests._fusion_cases import attention_args, detached_copy, gated_args, leaves_of

    torch.manual_seed(0)

    def check(fused, reference, args, dtype, tol):
        fused_args = detached_copy(args)
        ref_args = detached_copy(args)
        y = fused(*fused_args)
        r = reference(*ref_args)
        g = torch.randn_like(r)
        got = torch.autograd.grad(y, leaves_of(fused_args), g)
        want = torch.autograd.grad(r, leaves_of(ref_args), g)
        for a, e in zip((y, *got), (r, *want)):
            err = (a.double() - e.double()).abs().max().item() / (1 + e.double().abs().max().item())
            assert err < tol, (fused.__name__, dtype, a.shape, err)

    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 3e-2)):
        # 1..4 rows take segment_gemv where forced; odd widths leave partial vectors.
        for lead in ((1,), (3,), (2, 2), (7,), (1, 5)):
            for proj_bias in (True, False):
                args = attention_args((37, 300, 8), 19, lead, dtype, proj_bias=proj_bias)
                check(attention_fusion, attention_fusion_reference, list(args), dtype, tol)
            for count in (2, 3):
                args = gated_args(count, 21, lead, dtype)
                check(gated_fusion, gated_fusion_reference, list(args), dtype, tol)
    print("ok")
    """
)


@pytest.mark.parametrize(
    "engine",
    ["aten", "aten_split_k", "aten_gathered", "aten_cat_weights", "aten_float32", "segment_gemv", "onednn"],
)
def test_fusion_ops_match_reference_on_every_cpu_engine(engine):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MMFAST_CPU_GEMM": engine, "PYTHONPATH": root}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=root
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
