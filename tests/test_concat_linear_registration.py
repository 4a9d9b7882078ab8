"""concat_linear as a torch.library op: opcheck, torch.compile, both CPU GEMM engines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from mmfast.ops import ACTIVATIONS, concat_linear, concat_linear_reference


def _args(dtype=torch.float32, lead=(4, 3), sizes=(5, 7, 2), out_features=6, requires_grad=True):
    xs = [torch.randn(*lead, d, dtype=dtype, requires_grad=requires_grad) for d in sizes]
    weight = torch.randn(out_features, sum(sizes), dtype=dtype, requires_grad=requires_grad)
    bias = torch.randn(out_features, dtype=dtype, requires_grad=requires_grad)
    return xs, weight, bias


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("save", [True, False])
def test_opcheck_forward_op(activation, save):
    xs, weight, bias = _args(requires_grad=save)
    torch.library.opcheck(
        torch.ops.mmfast.concat_linear_forward.default, (xs, weight, bias, activation, save)
    )


@pytest.mark.parametrize("activation", ["none", "gelu", "tanh"])
def test_opcheck_public_op_and_backward_op(activation):
    xs, weight, bias = _args()
    torch.library.opcheck(torch.ops.mmfast.concat_linear.default, (xs, weight, bias, activation))
    grad = torch.randn(4, 3, 6)
    saved = torch.randn(4, 3, 6)
    torch.library.opcheck(
        torch.ops.mmfast.concat_linear_backward.default,
        (grad, [x.detach() for x in xs], weight.detach(), saved, activation, [True, True, True]),
    )


def test_opcheck_without_bias_and_one_segment():
    xs, weight, _ = _args(sizes=(9,))
    torch.library.opcheck(torch.ops.mmfast.concat_linear_forward.default, (xs, weight, None, "silu", True))


@pytest.mark.parametrize("activation", ["gelu", "relu", "none"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(activation, dynamic):
    torch._dynamo.reset()

    def model(x1, x2, weight, bias):
        return torch.tanh(concat_linear([x1, x2], weight, bias, activation)).sum(-1)

    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    for rows in (5, 8):
        x1, x2 = torch.randn(rows, 6, requires_grad=True), torch.randn(rows, 3, requires_grad=True)
        weight, bias = torch.randn(4, 9, requires_grad=True), torch.randn(4, requires_grad=True)
        out = compiled(x1, x2, weight, bias)
        expected = torch.tanh(concat_linear_reference([x1, x2], weight, bias, activation)).sum(-1)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        grads = torch.autograd.grad(out.sum(), [x1, x2, weight, bias])
        want = torch.autograd.grad(expected.sum(), [x1, x2, weight, bias])
        for got, ref in zip(grads, want):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_compiled_graph_has_no_cat():
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(
        lambda a, b, w: concat_linear([a, b], w, None, "relu"), backend=backend, fullgraph=True
    )
    compiled(torch.randn(3, 4), torch.randn(3, 5), torch.randn(2, 9))
    code = "\n".join(g.code for g in graphs)
    assert "concat_linear" in code and "torch.cat" not in code


@pytest.mark.parametrize(
    "engine", ["aten", "aten_split_k", "aten_gathered", "aten_float32", "segment_gemv", "onednn"]
)
def test_both_cpu_gemm_engines_match_reference(engine):
    """The engine choice is made per shape at first use; each engine must be correct on its own."""
    script = textwrap.dedent(
        """
        import torch
        from mmfast.ops import ACTIVATIONS, concat_linear, concat_linear_reference
        torch.manual_seed(0)
        # Batches of up to 4 rows also try segment_gemv.
        cases = ((torch.float32, 1e-4, 33), (torch.bfloat16, 6e-2, 33), (torch.float32, 1e-4, 2),
                 (torch.float64, 1e-10, 1), (torch.bfloat16, 6e-2, 3))
        for dtype, tol, rows in cases:
            for act in ACTIVATIONS:
                xs = [torch.randn(rows, d, dtype=dtype, requires_grad=True) for d in (40, 24, 9)]
                w = (torch.randn(17, 73) / 8).to(dtype).requires_grad_()
                b = torch.randn(17, dtype=dtype, requires_grad=True)
                y = concat_linear(xs, w, b, act)
                r = concat_linear_reference(xs, w, b, act)
                g = torch.randn_like(y)
                got = torch.autograd.grad(y, [*xs, w, b], g)
                want = torch.autograd.grad(r, [*xs, w, b], g)
                for a, e in zip((y, *got), (r, *want)):
                    err = (a.float() - e.float()).abs().max().item() / (1 + e.float().abs().max().item())
                    assert err < tol, (dtype, act, err)
        print("ok")
        """
    )
    env = {**os.environ, "MMFAST_CPU_GEMM": engine}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def _run_with_verbose_gemm_choices(script: str) -> subprocess.CompletedProcess:
    """Runs `script` in a fresh process (an empty tuning cache) that prints each GEMM choice, with no
    engine forced; fails unless it exits cleanly."""
    env = {**os.environ, "MMFAST_CPU_GEMM_VERBOSE": "1"}
    env.pop("MMFAST_CPU_GEMM", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_verbose_gemm_choice_reports_each_candidate_time():
    script = textwrap.dedent(
        """
        import torch
        from mmfast.ops import concat_linear
        xs = [torch.randn(8, d) for d in (5, 3)]
        concat_linear(xs, torch.randn(4, 8), torch.randn(4), "relu")
        """
    )
    result = _run_with_verbose_gemm_choices(script)
    choice = re.search(
        r"GEMM site concat_linear.forward, m=8 n=4 k=8 \(size class 8 4 8\) Float variant \d+: (.*) -> (\w+)", result.stderr
    )
    assert choice is not None, result.stderr[-2000:]
    timed = dict(re.findall(r"(\w+)=([0-9.]+)us", choice.group(1)))
    assert "aten" in timed and all(float(t) > 0 for t in timed.values())
    assert choice.group(2) in timed


def test_gemm_choice_is_shared_by_a_size_class_of_rows():
    """Row counts vary from call to call ([B, T, D] with varying T): one timing per size class
    (exact up to 16 rows, then powers of two), not per row count."""
    script = textwrap.dedent(
        """
        import torch
        from mmfast.ops import concat_linear
        w, b = torch.randn(4, 8), torch.randn(4)
        for rows in [3, 4, *range(17, 33), 33, 64]:
            concat_linear([torch.randn(rows, 5), torch.randn(rows, 3)], w, b, "relu")
        """
    )
    result = _run_with_verbose_gemm_choices(script)
    classes = re.findall(r"GEMM site concat_linear.forward, m=(\d+) n=4 k=8 \(size class (\d+) 4 8\)", result.stderr)
    assert classes == [("3", "3"), ("4", "4"), ("17", "32"), ("33", "64")], result.stderr[-2000:]


def test_deterministic_algorithms_take_the_plain_aten_path_without_timing():
    """Timed GEMM choices can differ between processes and round differently; with
    torch.use_deterministic_algorithms(True) every call runs ATen's GEMM, untimed."""
    script = textwrap.dedent(
        """
        import torch
        from mmfast.ops import concat_linear
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(0)
        xs = [torch.randn(64, 128), torch.randn(64, 128)]
        w, b = torch.randn(128, 256), torch.randn(128)
        got = concat_linear(xs, w, b, "relu")
        want = torch.relu(torch.addmm(b, torch.cat(xs, 1), w.t()))
        print(torch.equal(got, want))
        """
    )
    result = _run_with_verbose_gemm_choices(script)
    assert result.stdout.strip() == "True"
    assert "GEMM site" not in result.stderr
