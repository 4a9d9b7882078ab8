"""``mmfast bench``: the kernel benchmarks of a source checkout's ``bench/`` folder."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import mmfast


def find_bench_dir() -> Path | None:
    """``bench/`` beside the package's source folder, else under the current directory; a folder
    counts when it holds pytest-benchmark files (``test_bench_*.py``)."""
    candidates = [Path(mmfast.__file__).resolve().parents[1] / "bench", Path.cwd() / "bench"]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("test_bench_*.py")):
            return candidate
    return None


def run_bench(quick: bool = False, report: bool = False, pytest_args: Sequence[str] = ()) -> int:
    bench_dir = find_bench_dir()
    if bench_dir is None:
        raise FileNotFoundError(
            "the benchmarks need a source checkout (no bench/ folder beside the package or in the "
            "current directory); clone the repository and run mmfast bench there"
        )
    root = bench_dir.parent
    if report:
        command = [sys.executable, "-m", "bench.report", *(["--quick"] if quick else [])]
    else:
        command = [
            sys.executable, "-m", "pytest", str(bench_dir), "-q", "-p", "no:cacheprovider",
            "--benchmark-columns=min,median,iqr,rounds", "--benchmark-sort=name",
            *(["-m", "quick"] if quick else []), *pytest_args,
        ]  # fmt: skip
    return subprocess.call(command, cwd=root)
