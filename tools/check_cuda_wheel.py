"""Checks a CUDA wheel of mmfast on a machine without a GPU (`make cuda-wheel` runs it with the
Python of `.venv-cuda`, where the wheel is installed beside the CUDA build of PyTorch).

    python tools/check_cuda_wheel.py dist/cuda/mmfast-*.whl --archs "8.0;9.0"

1. The wheel: the extension, the build record (built with CUDA, for the listed architectures,
   against exactly the installed PyTorch), `Requires-Dist: torch==<that release>`, every Triton
   kernel module, and one cubin per architecture in the extension (cuobjdump, when there is one).
2. In a temporary directory, outside the source tree: `import mmfast` works without a GPU and loads
   the compiled extension; every schema of the `mmfast` library belongs to an op of the op registry
   (`mmfast/ops/_registry.py`), and every registered op has its public schema (with its composite
   kernel), a `_forward` and a `_backward` (and, where the op has one, a `_forward_with_grads`),
   each with a CPU and a CUDA kernel; the ops whose
   descriptor names C++ CUDA kernels have them in the extension itself (loaded on its own with
   `torch.ops.load_library`, before any Python registration).
3. The CPU op tests of the test suite (a copy of `tests/`, outside the source tree) and the wheel
   smoke test against the installed package.

Exits non-zero at the first failing step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The CPU op tests run against the installed wheel: the ops against their references, their
# errors, registration (opcheck), autograd and the CPU engines: these files, and every
# tests/test_<op>*.py of each op in the registry (so that an op added later is covered). Tests that
# read the source tree (csrc/, the in-place build), need CUDA, or compile Triton kernels under the
# interpreter stay out.
OP_TESTS = (
    "test_concat_linear_errors.py",
    "test_concat_linear_registration.py",
    "test_fusion_errors.py",
    "test_fusion_cpu_engines.py",
    "test_contrastive_losses.py",
    "test_calls_without_autograd.py",
    "test_double_backward.py",
    "test_forward_mode_ad.py",
    "test_op_registry.py",
)


def op_test_files(ops: list[str]) -> list[str]:
    named = {p.name for op in ops for p in (REPO / "tests").glob(f"test_{op}*.py")}
    named = {n for n in named if not n.endswith("_cuda.py")}
    return sorted(named | {n for n in OP_TESTS if (REPO / "tests" / n).exists()})


# Run in a fresh process, from outside the source tree: what the dispatcher has for every op.
INSTALLED_CHECK = r"""
import json, sys, warnings
from pathlib import Path
import torch

warnings.simplefilter("error")  # the compiled extension must load without the fallback warning
import mmfast
from mmfast import _backend
from mmfast.ops import _registry

source_package = Path(sys.argv[1]).resolve()  # <source tree>/mmfast
location = Path(mmfast.__file__).resolve()
assert source_package not in location.parents, f"mmfast imported from the source tree: {location}"
print(f"mmfast {mmfast.__version__} from {location.parent}; torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), CUDA device available: {torch.cuda.is_available()}")
assert _backend.extension_loaded(), _backend.load_error()
record = json.loads((location.parent / "_build_config.json").read_text())
assert record["with_cuda"] and record["torch_version"] == torch.__version__, record

ops = [d.name for d in _registry.descriptors()]
schemas = sorted(s.name for s in torch._C._jit_get_all_schemas() if s.name.startswith("mmfast::"))
expected = {f"mmfast::{op}{suffix}" for op in ops for suffix in ("", "_forward", "_backward")}
# The losses' forward that also returns the gradients (autograd's CPU path): optional per op.
optional = {f"mmfast::{op}_forward_with_grads" for op in ops}
problems = []
if unknown := sorted(set(schemas) - expected - optional):
    problems.append(f"schemas of no registered op (add a descriptor in mmfast/ops/): {unknown}")
if missing := sorted(expected - set(schemas)):
    problems.append(f"registered ops without their schemas in the extension: {missing}")


def kernel_line(name, key):
    dump = torch._C._dispatch_dump(name)
    return next((line for line in dump.splitlines() if line.startswith(f"{key}:")), None)


for op in ops:
    public = f"mmfast::{op}"
    composite = "CompositeImplicitAutograd"
    if public in schemas and not torch._C._dispatch_has_kernel_for_dispatch_key(public, composite):
        problems.append(f"{public}: no CompositeImplicitAutograd kernel (calls would not reach _forward)")
    for stage in ("forward", "backward", "forward_with_grads"):
        name = f"mmfast::{op}_{stage}"
        if name not in schemas:
            continue
        for key in ("CPU", "CUDA"):
            if not torch._C._dispatch_has_kernel_for_dispatch_key(name, key):
                problems.append(f"{name}: no {key} kernel")
        line = kernel_line(name, "CUDA")
        origin = line.split(" :: ")[0].removeprefix("CUDA: registered at ") if line else "none"
        print(f"  {name}: CUDA kernel from {origin}")
    print(f"{op}: cuda -> {mmfast.backend_info()[op]['cuda']}")
print(json.dumps({"ops": ops, "schemas": schemas, "problems": problems}))
sys.exit(1 if problems else 0)
"""

# The extension alone, loaded with torch.ops.load_library (no mmfast Python code): which forward /
# backward schemas have CUDA kernels registered by the C++ code.
EXTENSION_CHECK = r"""
import json, sys
import torch
torch.ops.load_library(sys.argv[1])
names = sorted(s.name for s in torch._C._jit_get_all_schemas() if s.name.startswith("mmfast::"))
print(json.dumps({n: torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA") for n in names}))
"""


def step(title: str) -> None:
    print(f"== {title}", flush=True)


def fail(message: str) -> None:
    print(f"check_cuda_wheel: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def clean_env() -> dict[str, str]:
    # Nothing of the source tree on the path; the default backend.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMFAST_BACKEND")}


def run(command: list[str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )


def torch_release() -> str:
    import torch

    return torch.__version__.split("+", 1)[0]


def find_cuobjdump() -> str | None:
    candidates = [shutil.which("cuobjdump")]
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            candidates.append(os.path.join(os.environ[variable], "bin", "cuobjdump"))
    candidates.append("/usr/local/cuda/bin/cuobjdump")
    try:  # triton bundles one
        import triton

        candidates.append(triton.knobs.nvidia.cuobjdump.path)
    except Exception:  # noqa: BLE001 - an optional tool; any failure means "not available"
        pass
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def check_wheel(wheel: Path, archs: list[str], work: Path) -> Path:
    """Step 1; returns the extracted extension."""
    import torch

    step(f"wheel {wheel.name}: contents, build record, torch pin")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        libraries = sorted(n for n in names if re.fullmatch(r"mmfast/_C\..*\.so", n))
        if len(libraries) != 1:
            fail(f"expected one mmfast/_C.*.so in the wheel, found {libraries}")
        record = json.loads(archive.read("mmfast/_build_config.json"))
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        library = work / Path(libraries[0]).name
        library.write_bytes(archive.read(libraries[0]))
    pins = re.findall(r"^Requires-Dist: (torch\b[^;\n]*)$", metadata, flags=re.MULTILINE)
    expected_pin = f"torch=={torch_release()}"
    print(f"  build record: {record}")
    print(f"  Requires-Dist: {pins}; extension {library.name}: {library.stat().st_size / 2**20:.1f} MiB")
    if pins != [expected_pin]:
        fail(f"the wheel pins {pins}, expected [{expected_pin!r}] (the PyTorch it was built against)")
    if not record.get("with_cuda"):
        fail("the build record says the extension was built without CUDA (FORCE_CUDA=1 missing?)")
    if record.get("torch_version") != torch.__version__ or record.get("torch_cuda") != torch.version.cuda:
        fail(f"built against torch {record.get('torch_version')}, installed is {torch.__version__}")
    if [a.strip() for a in (record.get("cuda_arch_list") or "").split(";")] != archs:
        fail(f"built for {record.get('cuda_arch_list')!r}, expected {';'.join(archs)!r}")
    triton_modules = {f"mmfast/triton/{p.name}" for p in (REPO / "mmfast" / "triton").glob("*.py")}
    if missing := sorted(triton_modules - names):
        fail(f"Triton kernel modules missing from the wheel: {missing}")

    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        print("  no cuobjdump here: the cubins of each architecture are not listed")
        return library
    listing = run([cuobjdump, "--list-elf", library], cwd=work)
    cubins = sorted(set(re.findall(r"\bsm_(\d+a?)\b", listing.stdout)))
    print(f"  cubins ({cuobjdump}): {', '.join('sm_' + c for c in cubins) or 'none'}")
    wanted = sorted({a.removesuffix("+PTX").replace(".", "") for a in archs})
    if listing.returncode != 0 or not set(wanted) <= set(cubins):
        output = listing.stdout[-2000:] + listing.stderr[-2000:]
        fail(f"expected cubins for sm_{', sm_'.join(wanted)}: {output}")
    return library


def check_dispatch(library: Path, work: Path) -> list[str]:
    """Step 2; returns the registered ops."""
    step("outside the source tree: import mmfast without a GPU, every op's kernels")
    extension = run([sys.executable, "-c", EXTENSION_CHECK, library], cwd=work)
    if extension.returncode != 0:
        fail(f"torch.ops.load_library({library.name}) failed:\n{extension.stderr[-4000:]}")
    cxx_cuda = json.loads(extension.stdout.strip().splitlines()[-1])
    installed = run([sys.executable, "-c", INSTALLED_CHECK, REPO / "mmfast"], cwd=work)
    lines = installed.stdout.strip().splitlines()
    print("\n".join("  " + line for line in lines[:-1]))
    if installed.returncode != 0 and not lines:
        fail(f"import mmfast failed:\n{installed.stderr[-4000:]}")
    result = json.loads(lines[-1])
    problems = list(result["problems"])
    # Ops whose descriptor names C++ CUDA kernels: the extension registers them itself.
    descriptors = run(
        [
            sys.executable,
            "-c",
            "import json; from mmfast.ops import _registry; "
            "print(json.dumps({d.name: sorted(d.compiled) for d in _registry.descriptors()}))",
        ],
        cwd=work,
    )
    compiled = json.loads(descriptors.stdout.strip().splitlines()[-1])
    for op, devices in compiled.items():
        if "cuda" not in devices:
            continue
        for stage in ("forward", "backward"):
            name = f"mmfast::{op}_{stage}"
            if not cxx_cuda.get(name):
                problems.append(f"{name}: the descriptor names C++ CUDA kernels, the extension has none")
    print(
        f"  {len(result['ops'])} ops ({', '.join(result['ops'])}), {len(result['schemas'])} schemas; "
        f"C++ CUDA kernels in the extension: {', '.join(n for n, has in cxx_cuda.items() if has) or 'none'}"
    )
    if problems or installed.returncode != 0:
        fail("\n  ".join(["the dispatcher's kernels:", *problems, installed.stderr[-2000:]]))
    return result["ops"]


def check_tests(work: Path, tests: tuple[str, ...]) -> None:
    step(f"CPU op tests against the installed wheel ({len(tests)} files of tests/, outside the source tree)")
    copy = work / "suite"
    shutil.copytree(REPO / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    # The pytest configuration (markers, warning filters) and the README that a docs test reads.
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    shutil.copy(REPO / "README.md", copy / "README.md")
    # (The source package, not the tree: .venv-cuda itself lies in the source tree.)
    smoke = run([sys.executable, copy / "tests" / "_wheel_smoke.py", REPO / "mmfast"], cwd=copy / "tests")
    print("\n".join("  " + line for line in smoke.stdout.strip().splitlines()))
    if smoke.returncode != 0:
        fail(f"tests/_wheel_smoke.py:\n{smoke.stderr[-4000:]}")
    where = run([sys.executable, "-c", "import mmfast; print(mmfast.__file__)"], cwd=copy)
    if Path(where.stdout.strip()).resolve().parent == REPO / "mmfast":
        fail(f"the test copy imports mmfast from the source tree: {where.stdout}")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(f"tests/{t}" for t in tests)]
    started = time.monotonic()
    result = subprocess.run(command, cwd=copy, env=clean_env(), text=True, timeout=1800)
    print(f"  pytest: exit {result.returncode} in {time.monotonic() - started:.0f} s", flush=True)
    if result.returncode != 0:
        fail("CPU op tests failed against the CUDA build")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--archs", default="8.0;9.0", help="TORCH_CUDA_ARCH_LIST the wheel was built for")
    parser.add_argument("--no-tests", action="store_true", help="skip step 3 (the test suite)")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.archs.split(";") if a.strip()]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mmfast-cuda-wheel-") as tmp:
        work = Path(tmp)
        library = check_wheel(args.wheel.resolve(), archs, work)
        ops = check_dispatch(library, work)
        if not args.no_tests:
            check_tests(work, tuple(op_test_files(ops)))
    print(f"check_cuda_wheel: all checks passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
