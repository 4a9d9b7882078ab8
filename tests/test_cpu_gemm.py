"""mmfast.ops.cpu_gemm, the in-process API of the CPU GEMM tuner: the engine table, forcing an engine
(and restoring the previous state), the choices remembered, resetting them; MMFAST_CPU_GEMM read
at the first GEMM (in fresh processes: the environment is the point there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from mmfast import _backend
from mmfast.ops import attention_fusion, concat_linear, cpu_gemm, gated_fusion
from tests._fusion_cases import attention_args, gated_args
from tests._tolerances import EXACT, FLOAT32_SMALL

pytestmark = pytest.mark.skipif(not _backend.extension_loaded(), reason="compiled extension not built")

REPO = Path(__file__).resolve().parents[1]
ENGINES = (
    "aten",
    "aten_split_k",
    "aten_gathered",
    "aten_cat_weights",
    "aten_float32",
    "segment_gemv",
    "onednn",
    "concurrent",
)


@pytest.fixture(autouse=True)
def _tuner_chooses():
    """Each test starts with no engine forced (whatever MMFAST_CPU_GEMM says) and leaves it so."""
    with cpu_gemm.force(None):
        yield


def test_engines_is_the_one_table_of_every_name_a_site_offers():
    assert cpu_gemm.engines() == ENGINES
    offered = set()
    for source in (REPO / "csrc").rglob("*.cpp"):
        # Candidates are written {"name", [&] { ... }}.
        offered |= set(re.findall(r'\{\s*"(\w+)",\s*\[&\]', source.read_text()))
    assert offered == set(ENGINES)


def test_force_is_a_context_manager_that_restores_the_previous_state():
    assert cpu_gemm.forced() is None
    with cpu_gemm.force("aten") as outer:
        assert cpu_gemm.forced() == "aten" and outer.previous is None
        with cpu_gemm.force("onednn"):
            assert cpu_gemm.forced() == "onednn"
        assert cpu_gemm.forced() == "aten"
        with pytest.raises(KeyError), cpu_gemm.force("segment_gemv"):
            raise KeyError("restored on an exception too")
        assert cpu_gemm.forced() == "aten"
        with cpu_gemm.force("auto"):
            assert cpu_gemm.forced() is None
    assert cpu_gemm.forced() is None


def test_force_takes_effect_without_with_and_restore_undoes_it():
    forcing = cpu_gemm.force("segment_gemv")
    try:
        assert cpu_gemm.forced() == "segment_gemv"
    finally:
        forcing.restore()
    assert cpu_gemm.forced() is None


def test_unknown_engine_is_a_value_error_naming_the_valid_ones_and_changes_nothing():
    with cpu_gemm.force("aten"):
        message = r"'onednn_typo' is not a CPU GEMM engine: expected one of aten, .*onednn"
        with pytest.raises(ValueError, match=message):
            cpu_gemm.force("onednn_typo")
        assert cpu_gemm.forced() == "aten"
    with pytest.raises(TypeError, match="expected an engine name"):
        cpu_gemm.force(3)


def _problem():
    xs = [torch.randn(33, d) for d in (200, 300, 100)]
    return xs, torch.randn(40, 600) / 600**0.5, torch.randn(40)


def _split_k(xs, w, b):
    out, offset = None, 0
    for x in xs:
        piece = w[:, offset : offset + x.shape[-1]]
        out = torch.addmm(b, x, piece.t()) if out is None else out.addmm_(x, piece.t())
        offset += x.shape[-1]
    return out


def _aten(xs, w, b):
    return torch.addmm(b, torch.cat(xs, 1), w.t())


def _onednn(xs, w, b):
    return torch.ops.mkldnn._linear_pointwise(torch.cat(xs, 1), w, b, "none", [], "")


# Engine -> (the computation it is made of, another engine's, which sums in another order), in
# PyTorch, for float32 concat_linear of three inputs without activation.
FORMULAS = {
    "aten": (_aten, _split_k),
    "aten_split_k": (_split_k, _aten),
    "onednn": (_onednn, _aten),
}


@pytest.mark.parametrize("engine", FORMULAS)
def test_a_forced_engine_is_what_the_site_runs(engine):
    """Bit for bit the computation the engine is made of, which another engine's differs from."""
    if engine == "onednn" and not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN")
    formula, other = FORMULAS[engine]
    xs, w, b = _problem()
    with torch.no_grad(), cpu_gemm.force(engine):
        got = concat_linear(xs, w, b, "none")
    torch.testing.assert_close(got, formula(xs, w, b), **EXACT)
    assert not torch.equal(got, other(xs, w, b))


def test_a_forced_engine_a_site_does_not_offer_runs_the_plain_aten_path():
    """concat_linear's forward has no aten_cat_weights: it runs ATen's GEMM."""
    xs, w, b = _problem()
    with torch.no_grad(), cpu_gemm.force("aten_cat_weights"):
        got = concat_linear(xs, w, b, "none")
    torch.testing.assert_close(got, torch.addmm(b, torch.cat(xs, 1), w.t()), **EXACT)


def test_choices_list_each_site_after_a_call():
    cpu_gemm.reset()
    xs = [torch.randn(6, 5, requires_grad=True), torch.randn(6, 3, requires_grad=True)]
    w, b = torch.randn(4, 8, requires_grad=True), torch.randn(4, requires_grad=True)
    concat_linear(xs, w, b, "gelu").sum().backward()
    gated_fusion(*gated_args(3, 8, (6,), torch.bfloat16))
    attention_fusion(*attention_args([7, 3, 5], 9, (2, 3), torch.float32))
    chosen = {c.site: c for c in cpu_gemm.choices()}
    assert {"concat_linear.forward", "concat_linear.grad_input", "concat_linear.grad_weight"} <= set(chosen)
    assert {"gated_fusion.logits", "attention_fusion.scores", "attention_fusion.projection"} <= set(chosen)
    forward = chosen["concat_linear.forward"]
    assert (forward.m, forward.n, forward.k, forward.shape) == (6, 4, 8, (6, 4, 8))
    assert forward.dtype == torch.float32
    assert chosen["gated_fusion.logits"].dtype == torch.bfloat16
    assert chosen["attention_fusion.projection"].m == 6
    for choice in chosen.values():
        assert choice.engine in choice.best_seconds and "aten" in choice.best_seconds
        assert set(choice.best_seconds) <= set(ENGINES)
        assert all(seconds > 0 for seconds in choice.best_seconds.values())
        # The fastest, or one within the tuner's 3 % tie margin of it.
        assert choice.best_seconds[choice.engine] <= min(choice.best_seconds.values()) * 1.0301


def test_reset_forgets_the_choices_and_the_next_call_times_again():
    xs, w = [torch.randn(5, 4), torch.randn(5, 2)], torch.randn(3, 6)
    concat_linear(xs, w)
    assert any(c.site == "concat_linear.forward" for c in cpu_gemm.choices())
    cpu_gemm.reset()
    assert cpu_gemm.choices() == []
    concat_linear(xs, w)
    assert [c.site for c in cpu_gemm.choices()] == ["concat_linear.forward"]


def test_forced_calls_are_neither_timed_nor_remembered():
    cpu_gemm.reset()
    with cpu_gemm.force("onednn"):
        concat_linear([torch.randn(5, 4)], torch.randn(3, 4), None, "relu")
    assert cpu_gemm.choices() == []


def test_threads_share_the_state_safely():
    """Ops tuning in threads while another resets, lists and forces: no crash, correct results."""
    errors = []

    def work():
        try:
            for rows in range(1, 40):
                xs = [torch.randn(rows, 7), torch.randn(rows, 9)]
                w = torch.randn(5, 16)
                torch.testing.assert_close(concat_linear(xs, w), torch.cat(xs, 1) @ w.t(), **FLOAT32_SMALL)
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        cpu_gemm.reset()
        cpu_gemm.choices()
        with cpu_gemm.force("aten"):
            pass
    for thread in threads:
        thread.join()
    assert errors == []


def test_without_the_extension_every_function_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setattr(_backend, "_extension_loaded", False)
    calls = (cpu_gemm.engines, cpu_gemm.forced, cpu_gemm.choices, cpu_gemm.reset, cpu_gemm.scratch_bytes)
    for call in (*calls, cpu_gemm.release_scratch):
        with pytest.raises(RuntimeError, match="needs the compiled extension"):
            call()
    with pytest.raises(RuntimeError, match="needs the compiled extension"):
        cpu_gemm.force("aten")


def test_scratch_buffers_are_counted_and_released_and_the_ops_still_run():
    torch.manual_seed(0)
    rows, sizes = 300, (70, 50)
    inputs = [torch.randn(rows, d) for d in sizes]
    weight, bias = torch.randn(40, sum(sizes)), torch.randn(40)
    expected = torch.relu(torch.cat(inputs, -1) @ weight.T + bias)
    cpu_gemm.release_scratch()
    assert cpu_gemm.scratch_bytes() == 0
    # A gathering engine gathers the two segments into this thread's scratch buffer.
    with cpu_gemm.force("aten_gathered"):
        first = concat_linear(inputs, weight, bias, "relu")
    held = cpu_gemm.scratch_bytes()
    assert held >= rows * sum(sizes) * 4
    # Reused, not grown, by a call of the same size.
    with cpu_gemm.force("aten_gathered"):
        concat_linear(inputs, weight, bias, "relu")
    assert cpu_gemm.scratch_bytes() == held
    assert cpu_gemm.release_scratch() == held
    assert cpu_gemm.scratch_bytes() == 0
    with cpu_gemm.force("aten_gathered"):
        again = concat_linear(inputs, weight, bias, "relu")
    torch.testing.assert_close(first, expected, **FLOAT32_SMALL)
    torch.testing.assert_close(again, first, **EXACT)


def test_scratch_of_other_threads_is_released_too():
    inputs = [torch.randn(200, 30), torch.randn(200, 20)]
    weight = torch.randn(16, 50)
    cpu_gemm.release_scratch()

    def run():
        with cpu_gemm.force("aten_gathered"):
            concat_linear(inputs, weight, None, "none")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    # The thread has exited: its buffers go with it, once the C++ runtime has run its thread_local
    # destructors, which can be just after join() returns.
    deadline = time.monotonic() + 10
    while cpu_gemm.scratch_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cpu_gemm.scratch_bytes() == 0
    barrier, done = threading.Barrier(2), threading.Event()

    def run_and_wait():
        run()
        barrier.wait()
        done.wait()

    thread = threading.Thread(target=run_and_wait)
    thread.start()
    barrier.wait()
    try:
        assert cpu_gemm.scratch_bytes() >= 200 * 50 * 4
        assert cpu_gemm.release_scratch() >= 200 * 50 * 4
        assert cpu_gemm.scratch_bytes() == 0
    finally:
        done.set()
        thread.join()


def _run(script: str, engine: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMFAST_CPU_GEMM": engine, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_mmfast_cpu_gemm_forces_an_engine_from_the_first_gemm():
    result = _run(
        """
        import torch
        from mmfast.ops import concat_linear, cpu_gemm
        xs = [torch.randn(33, d).bfloat16() for d in (200, 300, 100)]
        w, b = (torch.randn(40, 600) / 25).bfloat16(), torch.randn(40).bfloat16()
        with torch.no_grad():
            got = concat_linear(xs, w, b, "none")
        want = torch.addmm(b.float(), torch.cat(xs, 1).float(), w.float().t()).bfloat16()
        print(cpu_gemm.forced(), torch.equal(got, want), cpu_gemm.choices())
        """,
        "aten_float32",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["aten_float32", "True", "[]"]


def test_unknown_mmfast_cpu_gemm_value_is_a_clear_error_at_the_first_gemm():
    """Never a silent fallback (nor a crash): mmfast imports, every GEMM raises a ValueError naming
    the variable and the valid engines, until cpu_gemm.force replaces the value."""
    result = _run(
        """
        import torch
        import mmfast
        from mmfast.ops import concat_linear, cpu_gemm
        for call in (lambda: concat_linear([torch.randn(3, 4)], torch.randn(2, 4)), cpu_gemm.forced):
            for _ in range(2):
                try:
                    call()
                except ValueError as error:
                    print("ValueError:", error)
        cpu_gemm.force(None)
        print(concat_linear([torch.ones(3, 4)], torch.ones(2, 4)).sum().item())
        """,
        "onednn_typo",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    *errors, last = result.stdout.strip().splitlines()
    assert len(errors) == 4 and last == "24.0", result.stdout
    for error in errors:
        assert error.startswith(
            "ValueError: MMFAST_CPU_GEMM='onednn_typo' is not a CPU GEMM engine: expected one of "
        )
        assert all(name in error for name in ENGINES)
