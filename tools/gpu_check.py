"""`make gpu-check`: the checks that need a GPU, on a machine that already has everything.

    python3 tools/gpu_check.py [--jobs N] [--no-tests] [--no-bench] [--full-bench]

For a machine with a CUDA GPU, a CUDA build of PyTorch (2.11 or newer), Triton (3.6 or newer),
nvcc, pytest, pytest-benchmark and hypothesis, and no network. It installs nothing and uses the
Python it runs under (`python3` from PATH in the Makefile). In order:

1. build the extension in place against that PyTorch (`setup.py build_ext --inplace`, FORCE_CUDA=1,
   TORCH_CUDA_ARCH_LIST from the GPUs' compute capabilities);
2. run every CUDA test: the tests marked `cuda`, and the Triton test files (tests/test_triton_*.py),
   which run their kernels compiled on the GPU when there is one; several pytest processes at once
   (the Triton JIT compiles are CPU-bound);
3. run the GPU benchmark set (bench/test_bench_*_gpu.py, marker `gpu`; the `quick` cases unless
   --full-bench): every op against eager PyTorch and torch.compile, time and peak memory
   (torch.cuda.max_memory_allocated), and write bench/RESULTS-gpu.md through bench/report.py.

Without a usable CUDA device it prints one line saying so and exits with status 2 (nothing is
built or run). A GPU machine that lacks a prerequisite gets the list of what is missing and
status 1; a failing build, test or benchmark gives status 1 after the later steps have run.
The whole check is meant to fit in 8 minutes on one H100-class GPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_GPU_STATUS = 2
MIN_TORCH = (2, 11)
MIN_TRITON = (3, 6)
MIN_SETUPTOOLS = (77,)  # pyproject.toml's SPDX license expression
BUDGET_SECONDS = 8 * 60
LOG_DIR = REPO / "build" / "gpu-check"


def _version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else (0,)


def _visible_gpus() -> list[str]:
    """GPUs nvidia-smi lists (for telling "no GPU" from "a GPU but no CUDA PyTorch")."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in result.stdout.splitlines() if line.startswith("GPU ")]


def no_gpu_line() -> str | None:
    """The one line to print, and exit 2 with, when this machine has no usable CUDA device."""
    try:
        import torch
    except ImportError:
        if _visible_gpus():
            return None  # a GPU without PyTorch: reported as a missing prerequisite
        return (
            f"make gpu-check: no CUDA GPU here ({sys.executable} has no torch, nvidia-smi lists no GPU); "
            "nothing run"
        )
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None and _visible_gpus():
        return None  # a GPU with a CPU build of PyTorch: a missing prerequisite
    return (
        f"make gpu-check: no CUDA GPU here (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, "
        "no usable device); it needs a GPU machine with a CUDA PyTorch, Triton and nvcc; nothing run"
    )


def missing_prerequisites() -> list[str]:
    missing = []
    try:
        import torch
    except ImportError:
        return [f"PyTorch (a CUDA build, {'.'.join(map(str, MIN_TORCH))} or newer) for {sys.executable}"]
    if torch.version.cuda is None or not torch.cuda.is_available():
        missing.append(f"a CUDA build of PyTorch that sees the GPU (this is torch {torch.__version__})")
    if _version(torch.__version__) < MIN_TORCH:
        missing.append(f"PyTorch {'.'.join(map(str, MIN_TORCH))} or newer (this is {torch.__version__})")
    for module, name, minimum in (
        ("triton", "Triton", MIN_TRITON),
        ("setuptools", "setuptools", MIN_SETUPTOOLS),
        ("pytest", "pytest", None),
        ("pytest_benchmark", "pytest-benchmark", None),
        ("hypothesis", "hypothesis", None),
        ("numpy", "numpy", None),  # tests/conftest.py seeds it
    ):
        try:
            version = getattr(__import__(module), "__version__", "0")
        except ImportError:
            missing.append(name + (f" {'.'.join(map(str, minimum))} or newer" if minimum else ""))
            continue
        if minimum is not None and _version(version) < minimum:
            missing.append(f"{name} {'.'.join(map(str, minimum))} or newer (this is {version})")
    config = cuda_build_config()
    if config is None or not config.get("cuda_home"):
        where = config.get("cuda_home_source") if config else "setup.py --print-config failed"
        missing.append(f"the CUDA toolkit with nvcc (set CUDA_HOME or put nvcc on PATH): {where}")
    elif not os.path.isfile(os.path.join(config["cuda_home"], "bin", "nvcc")):
        missing.append(f"nvcc in {config['cuda_home']}/bin (the toolkit setup.py found)")
    return missing


def cuda_arch_list() -> str:
    import torch

    capabilities = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in capabilities)


def build_env(archs: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MMFAST_BACKEND"}
    env["FORCE_CUDA"] = "1"
    if archs:
        env["TORCH_CUDA_ARCH_LIST"] = archs
    # A ninja installed for this Python (the `ninja` wheel) but not on PATH: PyTorch looks on PATH.
    scripts = sysconfig.get_path("scripts")
    if shutil.which("ninja") is None and scripts and os.path.isfile(os.path.join(scripts, "ninja")):
        env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    return env


def cuda_build_config() -> dict | None:
    result = subprocess.run(
        [sys.executable, "setup.py", "--print-config"],
        cwd=REPO,
        env=build_env(os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return None


def _elapsed(started: float) -> str:
    return f"{time.monotonic() - started:.0f} s"


def build(archs: str) -> bool:
    has_ninja = shutil.which("ninja", path=build_env()["PATH"]) and os.environ.get("MMFAST_USE_NINJA") != "0"
    ninja = "ninja" if has_ninja else "no ninja: distutils, compiling in parallel"
    print(f"== build: setup.py build_ext --inplace, FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST={archs} ({ninja})")
    started = time.monotonic()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / "build.log"
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=REPO,
            env=build_env(archs),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    text = log.read_text(encoding="utf-8", errors="replace")
    if result.returncode != 0:
        print(text[-6000:])
        print(f"   build FAILED after {_elapsed(started)} (log: {log})")
        return False
    print(f"   built in {_elapsed(started)} (log: {log})")
    return True


# A test file that makes CUDA tensors (directly, or through a DEVICE that is "cuda" when there is
# a GPU, as the Triton test files do), and one with tests marked `cuda`. tests/test_gpu_check.py
# checks with these that no test needing CUDA escapes the selection below.
USES_CUDA = re.compile(
    r"""device=["']cuda|\.cuda\(\)|torch\.device\(["']cuda|^DEVICE = .*["']cuda["']""", re.M
)
CUDA_MARK = re.compile(
    r"^\s*@pytest\.mark\.cuda\b|^\s*pytest\.mark\.cuda,|^pytestmark = .*pytest\.mark\.cuda", re.M
)


def test_jobs() -> list[tuple[str, list[str]]]:
    """(name, pytest arguments): each Triton test file that uses CUDA, in full (on a GPU machine all
    of it runs compiled on the GPU), and the cuda-marked tests of the other files that have any
    (only those files are collected: the rest of the suite may need packages this machine lacks)."""
    triton, marked = [], []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        text, name = path.read_text(encoding="utf-8"), str(path.relative_to(REPO))
        if path.name.startswith("test_triton_") and USES_CUDA.search(text):
            triton.append(name)
        elif CUDA_MARK.search(text):
            marked.append(name)
    return [("cuda-marked tests", ["-m", "cuda", *marked])] + [(f, [f]) for f in triton]


def run_tests(jobs: int) -> bool:
    selections = test_jobs()
    print(f"== CUDA tests: {len(selections)} pytest processes, {jobs} at a time")
    started = time.monotonic()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MMFAST_BACKEND", "TRITON_INTERPRET")}

    def run(selection: tuple[str, list[str]]) -> tuple[str, int, str, float]:
        name, arguments = selection
        log = LOG_DIR / ("pytest-" + re.sub(r"[^\w.-]+", "_", name) + ".log")
        begun = time.monotonic()
        with open(log, "w", encoding="utf-8") as out:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *arguments],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
        # pytest's exit 5: nothing was selected (no cuda-marked test left outside the Triton files).
        status = 0 if result.returncode == 5 else result.returncode
        return name, status, log.read_text(encoding="utf-8", errors="replace"), time.monotonic() - begun

    ok = True
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        for name, status, output, seconds in pool.map(run, selections):
            lines = output.strip().splitlines()
            summary = lines[-1] if lines else "(no output)"
            print(f"   {name}: {summary} [{seconds:.0f} s]")
            if status != 0:
                ok = False
                print("\n".join("     " + line for line in lines[-60:]))
    print(f"   CUDA tests {'passed' if ok else 'FAILED'} in {_elapsed(started)}")
    return ok


def run_bench(full: bool) -> bool:
    command = [sys.executable, "-m", "bench.report", "--gpu"] + ([] if full else ["--quick"])
    print(f"== GPU benchmarks: {' '.join(command[1:])} (writes bench/RESULTS-gpu.md)")
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in ("MMFAST_BACKEND", "TRITON_INTERPRET")}
    result = subprocess.run(command, cwd=REPO, env=env, timeout=1800)
    print(f"   benchmarks {'done' if result.returncode == 0 else 'FAILED'} in {_elapsed(started)}")
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, also in a log
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="pytest processes")
    parser.add_argument("--no-tests", action="store_true")
    parser.add_argument("--no-bench", action="store_true")
    parser.add_argument("--full-bench", action="store_true", help="every GPU case, not only the quick ones")
    args = parser.parse_args(argv)

    line = no_gpu_line()
    if line is not None:
        print(line)
        return NO_GPU_STATUS
    missing = missing_prerequisites()
    if missing:
        print("make gpu-check: this GPU machine lacks: " + "; ".join(missing))
        return 1

    import torch
    import triton

    started = time.monotonic()
    archs = cuda_arch_list()
    names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
    print(
        f"== gpu-check: {', '.join(names)} (sm {archs}); torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), triton {triton.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    if not build(archs):
        return 1
    ok = True
    if not args.no_tests:
        ok = run_tests(args.jobs) and ok
    if not args.no_bench:
        ok = run_bench(args.full_bench) and ok
    total = time.monotonic() - started
    over = f" (over the {BUDGET_SECONDS // 60}-minute budget)" if total > BUDGET_SECONDS else ""
    print(f"== gpu-check {'passed' if ok else 'FAILED'} in {total:.0f} s{over}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
