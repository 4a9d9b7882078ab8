"""The binary wheel: what it contains and pins, and that it installs into a fresh virtual environment
(torch from the same local source as the Makefile's, no source tree on the path) where every op runs
its compiled kernel and matches its reference.

Building the wheel shares the object files of `make build` (see setup.py), so it only links; the
fresh environment gets torch from pip's configured local wheel and cache, never from a bare `torch`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MAX_WHEEL_BYTES = 10 * 2**20
TORCH_PIN = f"torch=={torch.__version__.split('+', 1)[0]}"


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # No PYTHONPATH: nothing of the source tree may leak into the fresh environment.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMFAST_BACKEND")}
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    shown = " ".join(map(str, command))
    assert result.returncode == 0, (
        f"{shown} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    with open(REPO / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the lock `make build` takes: builds share ./build
        # build/lib keeps files deleted from the sources; only the objects in build/temp are reused.
        for stale in (REPO / "build").glob("lib.*"):
            shutil.rmtree(stale)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-build-isolation",
                "--no-deps",
                "--wheel-dir",
                out,
                REPO,
            ],
            cwd=REPO,
        )
    (path,) = out.glob("mmfast-*.whl")
    return path


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory) -> Path:
    """A new virtual environment (no system site-packages) with the pinned torch and the wheel."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], cwd=root)
    python = root / "venv" / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet"]
    _run([*pip, TORCH_PIN, "numpy"], cwd=root)
    _run([*pip, "--no-deps", wheel], cwd=root)
    return python


def _wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_is_small_and_holds_the_extension_and_the_triton_kernels(wheel: Path):
    size = wheel.stat().st_size
    assert size < MAX_WHEEL_BYTES, f"{wheel.name} is {size / 2**20:.1f} MB (limit 10 MB)"
    names = set(_wheel_names(wheel))
    assert any(re.fullmatch(r"mmfast/_C\..*\.so", name) for name in names), sorted(names)
    assert "mmfast/_build_config.json" in names
    triton_sources = {f"mmfast/triton/{p.name}" for p in (REPO / "mmfast" / "triton").glob("*.py")}
    assert triton_sources, "no Triton kernel modules in the source tree"
    assert triton_sources <= names, sorted(triton_sources - names)


def test_wheel_pins_the_torch_it_was_built_against(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))
        record = json.loads(archive.read("mmfast/_build_config.json"))
    requirements = re.findall(r"^Requires-Dist: (torch\b[^;\n]*)$", metadata.decode(), flags=re.MULTILINE)
    assert requirements == [TORCH_PIN]
    assert record["torch_version"] == torch.__version__
    assert record["with_cuda"] is False


def test_fresh_install_runs_every_op_on_its_compiled_kernel(fresh_python: Path, tmp_path: Path):
    script = tmp_path / "smoke.py"
    shutil.copy(REPO / "tests" / "_wheel_smoke.py", script)
    shutil.copy(REPO / "tests" / "_tolerances.py", tmp_path / "_tolerances.py")  # its tolerances
    output = _run([fresh_python, script, REPO], cwd=tmp_path).stdout
    assert "concat_linear: ok" in output
    for op in ("gated_fusion", "attention_fusion"):
        assert f"{op}: ok" in output


def test_fresh_install_cli_info(fresh_python: Path, tmp_path: Path, wheel: Path):
    if "mmfast/__main__.py" not in _wheel_names(wheel):
        pytest.skip("this build has no command line (mmfast/__main__.py is not in the wheel)")
    output = _run([fresh_python, "-m", "mmfast", "info"], cwd=tmp_path).stdout
    assert "concat_linear" in output and "cpp" in output, output


def test_fresh_install_with_another_torch_falls_back_with_a_clear_message(fresh_python: Path, tmp_path: Path):
    """Recorded as built against another PyTorch release, the extension is not loaded: one warning
    names both versions and every op runs its reference (instead of an undefined-symbol error)."""
    find_package = "import importlib.util as u; print(u.find_spec('mmfast').submodule_search_locations[0])"
    site = _run([fresh_python, "-c", find_package], cwd=tmp_path).stdout.strip()
    record_path = Path(site) / "_build_config.json"
    original = record_path.read_text(encoding="utf-8")
    record = json.loads(original)
    record["torch_version"] = "2.12.0+cpu"
    record_path.write_text(json.dumps(record), encoding="utf-8")
    try:
        result = _run(
            [
                fresh_python,
                "-W",
                "always",
                "-c",
                "import mmfast; print(mmfast.backend_info()['concat_linear']['cpu'])",
            ],
            cwd=tmp_path,
        )
    finally:
        record_path.write_text(original, encoding="utf-8")
    assert "built against PyTorch 2.12.0+cpu" in result.stderr, (
        "the extension was loaded despite the recorded PyTorch mismatch: mmfast._backend._load_extension "
        f"must ask mmfast._version_check.torch_mismatch() before importing _C. stderr: {result.stderr}"
    )
    assert result.stdout.startswith("reference"), result.stdout
