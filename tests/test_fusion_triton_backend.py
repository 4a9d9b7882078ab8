"""MMFAST_BACKEND=triton: the public ops (concat_linear, the fusions, the losses) run the Triton
kernels on CPU tensors (under TRITON_INTERPRET=1), forward and backward, against the references.
Each check runs in a fresh process because the backend is chosen from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import mmfast
    from mmfast.ops import attention_fusion, gated_fusion
    from mmfast.ops import attention_fusion_reference, gated_fusion_reference
    from tests._fusion_cases import attention_args, detached_copy, gated_args, leaves_of
    from tests._tolerances import TRITON_INTERPRETED_VS_FLOAT64, assert_close_to_float64

    torch.manual_seed(0)

    def check(fused_fn, reference_fn, args, dtype):
        out = fused_fn(*args)
        grad = torch.randn_like(out)
        got = torch.autograd.grad(out, leaves_of(args), grad)
        exact = detached_copy(args, torch.float64)
        want_out = reference_fn(*exact)
        want = torch.autograd.grad(want_out, leaves_of(exact), grad.double())
        tolerance = TRITON_INTERPRETED_VS_FLOAT64[dtype]
        assert_close_to_float64(out, want_out, tolerance)
        for g, w in zip(got, want):
            assert_close_to_float64(g, w, tolerance, scaled=True)

    for dtype in (torch.float32, torch.float16):
        for count, dim, lead in [(2, 19, (5,)), (3, 17, (2, 3)), (5, 24, (7,))]:
            check(gated_fusion, gated_fusion_reference, list(gated_args(count, dim, lead, dtype)), dtype)
        for dims, out_dim, lead in [([5, 17], 9, (6,)), ([33, 17, 5], 19, (2, 3)), ([4, 3, 8, 2], 7, (5,))]:
            args = list(attention_args(dims, out_dim, lead, dtype))
            check(attention_fusion, attention_fusion_reference, args, dtype)
    from mmfast.ops import concat_linear, concat_linear_reference

    for dtype in (torch.float32, torch.float16):
        cases = [([5, 0, 17], (2, 3), "gelu"), ([8, 3, 4, 9], (7,), "tanh"), ([6], (4,), "none")]
        for widths, lead, activation in cases:
            inputs = [torch.randn(*lead, w, dtype=dtype, requires_grad=True) for w in widths]
            weight = (torch.randn(11, sum(widths)) / sum(widths) ** 0.5).to(dtype).requires_grad_()
            bias = torch.randn(11, dtype=dtype, requires_grad=True)
            check(lambda *a, act=activation: concat_linear(list(a[:-2]), a[-2], a[-1], act),
                  lambda *a, act=activation: concat_linear_reference(list(a[:-2]), a[-2], a[-1], act),
                  [*inputs, weight, bias], dtype)
    assert mmfast.backend_info()["concat_linear"]["cpu"].startswith("triton"), mmfast.backend_info()
    # The Triton kernels registered as the op's kernels pass opcheck (schema, fakes, autograd).
    inputs = [torch.randn(3, w, requires_grad=True) for w in (5, 7)]
    weight, bias = torch.randn(4, 12, requires_grad=True), torch.randn(4, requires_grad=True)
    forward_op = torch.ops.mmfast.concat_linear_forward.default
    torch.library.opcheck(forward_op, (inputs, weight, bias, "silu", True))
    compiled = torch.compile(concat_linear, fullgraph=True)
    want = concat_linear_reference(inputs, weight, bias, "silu")
    torch.testing.assert_close(compiled(inputs, weight, bias, "silu"), want)
    assert "mmfast.triton.concat_linear" in sys.modules
    from mmfast.ops import clip_loss, clip_loss_reference, siglip_loss, siglip_loss_reference

    # The losses take float32, float64 and bfloat16 features (the interpreter's bfloat16 is wrong).
    a, b = (torch.randn(37, 17, requires_grad=True) for _ in range(2))
    scale, bias = torch.tensor(3.0, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    for fused, reference in ((clip_loss, clip_loss_reference), (siglip_loss, siglip_loss_reference)):
        check(fused, reference, [a, b, scale, bias], torch.float32)
    assert mmfast.backend_info()["clip_loss"]["cpu"].startswith("triton"), mmfast.backend_info()
    assert "mmfast.triton.gated_fusion" in sys.modules and "mmfast.triton.attention_fusion" in sys.modules
    assert "mmfast.triton.clip_loss" in sys.modules and "mmfast.triton.siglip_loss" in sys.modules
    assert mmfast.backend_info()["gated_fusion"]["cpu"].startswith("triton"), mmfast.backend_info()
    try:
        gated_fusion(*gated_args(9, 2, (3,), torch.float32))
    except ValueError as error:
        assert "take 2 to 8 inputs" in str(error), error
    else:
        raise AssertionError("9 inputs were accepted by the Triton kernels")
    print("ok")
    """
)


def test_triton_backend_runs_the_kernels_on_cpu_tensors():
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MMFAST_BACKEND": "triton", "TRITON_INTERPRET": "1", "PYTHONPATH": root}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=root
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
