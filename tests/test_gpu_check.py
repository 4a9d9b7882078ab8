"""`make gpu-check` (tools/gpu_check.py) on a machine without a GPU: one line and status 2; the
selection it relies on (every test that needs CUDA carries the `cuda` marker; every registered op
has GPU benchmark cases in its quick set); and the GPU report bench/report.py writes for it (from
rows written by hand, so that nothing is timed)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.report import gpu_bench_files, read_gpu_memory, read_rows, write_gpu_report
from mmfast.ops import _registry

REPO = Path(__file__).resolve().parents[1]
no_gpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(command, cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=300)


@no_gpu_only
def test_gpu_check_without_a_gpu_prints_one_line_and_exits_2():
    result = _run([sys.executable, "tools/gpu_check.py"])
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("make gpu-check: no CUDA GPU here"), result.stdout
    assert f"torch {torch.__version__}" in lines[0] and result.stderr == ""


@no_gpu_only
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_without_a_gpu_exits_2():
    # Make's own status for a failed recipe is 2 as well; the line comes from the script.
    result = _run(["make", "--no-print-directory", "gpu-check", f"GPU_PYTHON={sys.executable}"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == 1 and "no CUDA GPU here" in result.stdout, result.stdout


@no_gpu_only
def test_gpu_check_without_torch_says_so_in_one_line(tmp_path: Path):
    """`python3` from PATH may have no torch at all (then nvidia-smi decides whether there is a GPU)."""
    result = _run([sys.executable, "-I", "-S", "tools/gpu_check.py"], PATH=str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.fullmatch(
        r"make gpu-check: no CUDA GPU here \(.* has no torch, .*\); nothing run\n", result.stdout
    )


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", REPO / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_test_that_needs_cuda_carries_the_cuda_marker():
    """`make gpu-check` runs the Triton test files that use CUDA and the `cuda`-marked tests of the
    other files: a test skipped without CUDA but not marked would never run anywhere."""
    gpu_check = _gpu_check()
    files = [
        p for p in sorted((REPO / "tests").glob("test_*.py")) if gpu_check.USES_CUDA.search(p.read_text())
    ]
    assert files, "no test uses CUDA tensors"
    selected = {arg for _, args in gpu_check.test_jobs() for arg in args if arg.endswith(".py")}
    for path in files:
        assert str(path.relative_to(REPO)) in selected, (
            f"{path.name} uses CUDA tensors but no test is marked cuda"
        )
    result = _run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-p", "tests._cuda_markers", "--list-unmarked-cuda", *(str(p.relative_to(REPO)) for p in files)]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    unmarked = [
        line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("UNMARKED-CUDA ")
    ]
    assert not unmarked, f"skipped without CUDA but not marked cuda: {unmarked}"
    assert "test_concat_linear_cuda.py" in result.stdout  # the collection did see the CUDA tests


def test_every_registered_op_has_quick_gpu_benchmark_cases():
    files = [str(p.relative_to(REPO)) for p in gpu_bench_files()]
    result = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "gpu and quick",
        ]
        + files
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ids = re.findall(r"\[([^\]]+)\]$", result.stdout, flags=re.MULTILINE)
    ops = [d.name for d in _registry.descriptors()]
    for op in ops:
        for mode in ("forward", "forward+backward"):
            for impl in ("mmfast", "eager", "compile"):
                assert any(i.startswith(f"{op}-{mode}-") and i.endswith(f"-{impl}") for i in ids), (
                    op,
                    mode,
                    impl,
                )
    # The quick set stays small: torch.compile's first call of each case dominates its time.
    assert len(ids) <= 8 * len(ops), len(ids)


RATIO_FIELDS = [
    "op",
    "mode",
    "dtype",
    "shape",
    "batch",
    "mmfast_ms",
    "speedup_vs_eager",
    "speedup_vs_compile",
]


def test_gpu_report_has_speedups_and_peak_memory(tmp_path: Path):
    with open(tmp_path / "ratios.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RATIO_FIELDS)
        writer.writerow(
            ["clip_loss", "forward+backward", "bfloat16", "D=256 (cuda)", "16384", "1.5", "2.00", "1.20"]
        )
    case = {"op": "clip_loss", "mode": "forward+backward", "dtype": "bfloat16", "shape": "D=256 (cuda)"}
    benchmarks = [
        {"extra_info": {**case, "batch": 16384, "impl": impl, "peak_mib": mib}}
        for impl, mib in (("mmfast", 64.0), ("eager", 3136.0), ("compile", 1088.0))
    ]
    benchmarks.append({"extra_info": {"op": "x"}})  # a case without a memory record is left out
    (tmp_path / "gpu.json").write_text(json.dumps({"benchmarks": benchmarks}), encoding="utf-8")
    memory = read_gpu_memory([tmp_path / "gpu.json"])
    path = write_gpu_report(read_rows(tmp_path / "ratios.csv"), memory, tmp_path, quick=True)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "RESULTS-gpu.md"
    assert "`python -m bench.report --gpu --quick`" in text and "make gpu-check" in text
    assert f"torch {torch.__version__}" in text and "CUDA " in text
    assert "| forward+backward | bfloat16 | D=256 (cuda) | 16384 | 1.500 | 2.00 | 1.20 |" in text
    assert "### Peak GPU memory" in text
    row = "| clip_loss | forward+backward | bfloat16 | D=256 (cuda) | 16384 | 64.0 | 3136.0 | 1088.0 |"
    assert row + " 49.00 | 17.00 |" in text
