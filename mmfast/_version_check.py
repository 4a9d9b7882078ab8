"""Is the installed PyTorch the one the compiled extension was built against?

A C++ extension links against PyTorch's C++ symbols, which change between releases: loading it into
another PyTorch fails with an undefined-symbol error, or worse, loads and misbehaves. The build
(`setup.py`) records the PyTorch version and CUDA flavour in `mmfast/_build_config.json` beside the
extension; `mmfast._backend` asks `torch_mismatch()` before importing `mmfast._C` and, on a mismatch,
falls back to the reference ops with that message instead of importing the extension.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

BUILD_CONFIG_PATH = Path(__file__).with_name("_build_config.json")


def read_build_config(path: Path = BUILD_CONFIG_PATH) -> dict | None:
    """The build record, or None when there is none (a build from before it existed, or a copy of
    the sources without a build): then nothing is known and the extension's own import decides."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "torch_version" in record else None


def _release(version: str) -> str:
    return version.split("+", 1)[0]


def torch_mismatch(
    build_config: dict | None = None,
    torch_version: str | None = None,
    torch_cuda: str | None = None,
) -> str | None:
    """Why the compiled extension cannot be used with the running PyTorch, or None if it can.

    Compares the PyTorch release (local labels such as ``+cpu`` ignored: the CPU kernels' ABI is
    the same in the CPU and CUDA builds of one release) and, for a CUDA build, that the running
    PyTorch has CUDA. Arguments default to the installed build record and the running PyTorch.
    """
    record = read_build_config() if build_config is None else build_config
    if record is None:
        return None
    running = torch.__version__ if torch_version is None else torch_version
    running_cuda = torch.version.cuda if torch_version is None and torch_cuda is None else torch_cuda
    built = str(record["torch_version"])
    reinstall = (
        f"install torch=={_release(built)}, or rebuild mmfast against this PyTorch "
        "(`pip install --no-build-isolation .` from the sources)"
    )
    if _release(built) != _release(running):
        return (
            f"the compiled extension was built against PyTorch {built} but PyTorch {running} is "
            f"installed, and C++ extensions only load into the release they were built for; {reinstall}"
        )
    if record.get("with_cuda") and running_cuda is None:
        return (
            f"the compiled extension was built with CUDA {record.get('torch_cuda')} (PyTorch {built}) but "
            f"the installed PyTorch {running} has no CUDA; {reinstall}"
        )
    return None
