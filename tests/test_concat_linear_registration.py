"""concat_linear as a torch.library op: opcheck, torch.compile, every CPU GEMM engine, the tuner's
choices (through mmfast.ops.cpu_gemm, in-process; MMFAST_CPU_GEMM_VERBOSE in a fresh process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmfast import _backend
from mmfast.ops import ACTIVATIONS, concat_linear, concat_linear_reference, cpu_gemm
from tests._tolerances import CPU_ENGINES, EXACT, FLOAT32_SMALL, assert_scaled_error

REPO = Path(__file__).resolve().parents[1]


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
        torch.testing.assert_close(out, expected, **FLOAT32_SMALL)
        grads = torch.autograd.grad(out.sum(), [x1, x2, weight, bias])
        want = torch.autograd.grad(expected.sum(), [x1, x2, weight, bias])
        for got, ref in zip(grads, want):
            torch.testing.assert_close(got, ref, **FLOAT32_SMALL)


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


# Batches of up to 4 rows also offer segment_gemv; bfloat16 also aten_float32; float32 and float64
# with several inputs aten_split_k.
ENGINE_CASES = [
    (torch.float32, 33),
    (torch.bfloat16, 33),
    (torch.float32, 2),
    (torch.float64, 1),
    (torch.bfloat16, 3),
]


@pytest.mark.parametrize("engine", cpu_gemm.engines() if _backend.extension_loaded() else [])
@pytest.mark.parametrize(("dtype", "rows"), ENGINE_CASES, ids=lambda v: str(v).removeprefix("torch."))
def test_every_cpu_gemm_engine_matches_reference(engine, dtype, rows):
    """The engine choice is made per shape at first use; each engine must be correct on its own."""
    with cpu_gemm.force(engine):
        for act in ACTIVATIONS:
            xs = [torch.randn(rows, d, dtype=dtype, requires_grad=True) for d in (40, 24, 9)]
            w = (torch.randn(17, 73) / 8).to(dtype).requires_grad_()
            b = torch.randn(17, dtype=dtype, requires_grad=True)
            y = concat_linear(xs, w, b, act)
            r = concat_linear_reference(xs, w, b, act)
            g = torch.randn_like(y)
            got = torch.autograd.grad(y, [*xs, w, b], g)
            want = torch.autograd.grad(r, [*xs, w, b], g)
            for index, (a, e) in enumerate(zip((y, *got), (r, *want))):
                assert_scaled_error(a, e, CPU_ENGINES[dtype], (engine, dtype, act, index))


def _forward_choices(rows_list, site="concat_linear.forward"):
    """The tuner's choices for concat_linear of inputs [rows, 5] and [rows, 3] (k=8, n=4) for each row
    count, timed from an empty memory."""
    w, b = torch.randn(4, 8), torch.randn(4)
    with cpu_gemm.force(None):  # the tuner chooses, whatever MMFAST_CPU_GEMM says
        cpu_gemm.reset()
        for rows in rows_list:
            concat_linear([torch.randn(rows, 5), torch.randn(rows, 3)], w, b, "relu")
    return [c for c in cpu_gemm.choices() if c.site == site]


def test_gemm_choice_names_the_site_and_reports_each_candidate_time():
    (choice,) = _forward_choices([8])
    assert (choice.m, choice.n, choice.k, choice.shape, choice.dtype) == (8, 4, 8, (8, 4, 8), torch.float32)
    assert "aten" in choice.best_seconds and all(t > 0 for t in choice.best_seconds.values())
    assert choice.engine in choice.best_seconds


def test_gemm_choice_is_shared_by_a_size_class_of_rows():
    """Row counts vary from call to call ([B, T, D] with varying T): one timing per size class
    (exact up to 16 rows, then powers of two), not per row count."""
    classes = [(c.shape[0], c.m) for c in _forward_choices([3, 4, *range(17, 33), 33, 64])]
    assert classes == [(3, 3), (4, 4), (17, 32), (33, 64)]


def test_deterministic_algorithms_take_the_plain_aten_path_without_timing():
    """Timed GEMM choices can differ between processes and round differently; with
    torch.use_deterministic_algorithms(True) every call runs ATen's GEMM, untimed."""
    xs = [torch.randn(64, 128), torch.randn(64, 128)]
    w, b = torch.randn(128, 256), torch.randn(128)
    cpu_gemm.reset()
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with cpu_gemm.force(None):
            got = concat_linear(xs, w, b, "relu")
    finally:
        torch.use_deterministic_algorithms(before)
    want = torch.relu(torch.addmm(b, torch.cat(xs, 1), w.t()))
    torch.testing.assert_close(got, want, **EXACT)
    assert cpu_gemm.choices() == []


def test_verbose_gemm_choice_prints_the_site_and_each_candidate_time():
    """MMFAST_CPU_GEMM_VERBOSE is read once per process: a fresh one prints each choice to stderr."""
    script = textwrap.dedent(
        """
        import torch
        from mmfast.ops import concat_linear
        xs = [torch.randn(8, d) for d in (5, 3)]
        concat_linear(xs, torch.randn(4, 8), torch.randn(4), "relu")
        """
    )
    env = {**os.environ, "MMFAST_CPU_GEMM_VERBOSE": "1"}
    env.pop("MMFAST_CPU_GEMM", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    choice = re.search(
        r"GEMM site concat_linear.forward, m=8 n=4 k=8 \(size class 8 4 8\) Float variant \d+: (.*) -> (\w+)",
        result.stderr,
    )
    assert choice is not None, result.stderr[-2000:]
    timed = dict(re.findall(r"(\w+)=([0-9.]+)us", choice.group(1)))
    assert "aten" in timed and all(float(t) > 0 for t in timed.values())
    assert choice.group(2) in timed


def test_no_candidate_is_refused_for_inputs_that_require_grad():
    """The tuner skips a candidate that throws (an engine that cannot run a dtype on this CPU); the
    verbose output names each refusal, so that a candidate that always throws (a bug) is seen. With
    inputs and weights that require grad, as in training, none may be refused."""
    script = textwrap.dedent(
        """
        import torch
        from mmfast.ops import attention_fusion, concat_linear, gated_fusion
        torch.set_num_threads(2)
        def leaf(*shape):
            return torch.randn(*shape, requires_grad=True)
        xs = [leaf(64, 128), leaf(64, 128)]
        concat_linear(xs, leaf(128, 256), leaf(128), "relu").sum().backward()
        concat_linear(xs, leaf(128, 256), leaf(128), "gelu").sum().backward()
        gated_fusion(xs, leaf(128, 256), leaf(128)).sum().backward()
        projections = [leaf(64, 128), leaf(64, 128)], [leaf(64), leaf(64)]
        attention_fusion(xs, *projections, leaf(2, 256), leaf(2)).sum().backward()
        """
    )
    env = {**os.environ, "MMFAST_CPU_GEMM_VERBOSE": "1"}
    env.pop("MMFAST_CPU_GEMM", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sites = re.findall(r"GEMM site (\S+), ", result.stderr)
    assert {"concat_linear.forward", "concat_linear.backward", "gated_fusion.logits"} <= set(sites), sites
    lines = result.stderr.splitlines()
    refused = [line for line in lines if "refused" in line and "oneDNN cannot" not in line]
    assert refused == [], "\n".join(refused)


def test_a_remembered_choice_that_runs_other_sites_does_not_deadlock():
    """concat_linear.backward's sequential candidate runs the grad_input and grad_weight sites
    (each tuned, each taking the tuner's lock): once remembered, it must run outside that lock. A
    fresh process, so that a hang is a timeout here rather than a stuck test run."""
    code = textwrap.dedent(
        """
        import torch
        from mmfast.ops import concat_linear, cpu_gemm
        for rows in (1, 1, 1, 64, 64, 64):
            xs = [torch.randn(rows, 128, requires_grad=True) for _ in range(2)]
            w = torch.randn(128, 256, requires_grad=True)
            concat_linear(xs, w, None, "relu").sum().backward()
        sites = {c.site for c in cpu_gemm.choices()}
        assert "concat_linear.backward" in sites, sites
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MMFAST_CPU_GEMM", None)
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
