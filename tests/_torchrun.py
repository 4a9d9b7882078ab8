"""Runs a test worker script on two CPU processes under torchrun (gloo), as the DDP tests do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_two_processes(worker: str, *args: str, timeout: float) -> None:
    """``torchrun --standalone --nproc_per_node=2 tests/WORKER ARGS`` with one thread per process;
    fails with the processes' own messages (a rank's traceback or abort), not torch's deprecation
    warnings, which otherwise fill the end of stderr."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(REPO / "tests" / worker), *args,
    ]  # fmt: skip
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        lines = [
            line
            for line in completed.stderr.splitlines()
            if "Warning" not in line and not line.strip().startswith("return func(")
        ]
        message = "\n".join(lines)[-6000:]
        raise AssertionError(f"torchrun {worker} exited with {completed.returncode}:\n{message}")
