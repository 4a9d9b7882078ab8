"""Build of mmfast's C++ (and, on CUDA machines, CUDA) extension `mmfast._C`.

The CPU extension is always built. The CUDA sources (`csrc/**/*_cuda.cpp`, `kernels/*.cu`) are
added when PyTorch was built with CUDA or `FORCE_CUDA=1`; `TORCH_CUDA_ARCH_LIST` then defaults to
"8.0;8.6;9.0" because PyTorch's own arch detection fails on a machine with no visible GPU.

A compiled extension only loads into the PyTorch it was compiled against, so the package requires
exactly that PyTorch version (`torch==<build version>`) and records it, with the CUDA version, in
`mmfast/_build_config.json`, which `mmfast._version_check` compares with the running PyTorch before
the extension is loaded.

`python setup.py --print-config` prints what would be built (extension kind, sources, flags, the
nvcc `-gencode` flags for the arch list) as JSON and compiles nothing; CI checks it.
Wheel builds (any build that is not `--inplace`) link without debug info, which is 97 % of the
library's size; `MMFAST_KEEP_DEBUG_INFO=1` keeps it.

CUDA builds find the toolkit themselves (`find_cuda_home`): `CUDA_HOME` / `CUDA_PATH` when set, else
the toolkit of the `nvcc` on `PATH` (followed through symlinks and wrapper scripts: PyTorch's own
guess, the parent of the folder holding `nvcc`, is `/usr/local` for a `/usr/local/bin/nvcc` shim,
which has no `cuda_runtime_api.h`), else `/usr/local/cuda`. The cuBLAS / cuSPARSE / cuSOLVER headers
that PyTorch's CUDA headers include come with the `nvidia-*` wheels PyTorch depends on
(`site-packages/nvidia/cu13/include`, or `nvidia/<library>/include` in older layouts), not with a
minimal toolkit; they are added after the toolkit's own include folder. CUDA objects are kept in
a build folder of their own (`build/temp...-cuda`), so CPU and CUDA builds in one checkout do not
recompile each other's objects.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;8.6;9.0"
BUILD_CONFIG_NAME = "_build_config.json"
CUDA_RUNTIME_HEADER = os.path.join("include", "cuda_runtime_api.h")


def _is_toolkit(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, CUDA_RUNTIME_HEADER))


def _nvcc_toolkit(nvcc: str) -> str | None:
    """The toolkit folder of an `nvcc`: beside its real file (through symlinks), or, for a wrapper
    script that execs another nvcc, the folder nvcc itself reports (`_HERE_` of a dry run)."""
    real = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if _is_toolkit(real):
        return real
    try:
        dry_run = subprocess.run(
            [nvcc, "-dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ _HERE_=(.+)$", dry_run.stdout + dry_run.stderr, flags=re.MULTILINE)
    if match is None:
        return None
    here = os.path.dirname(os.path.realpath(match.group(1).strip()))
    return here if _is_toolkit(here) else None


def find_cuda_home() -> tuple[str | None, str]:
    """The CUDA toolkit to build with, and where it was found."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable], f"${variable}"
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        toolkit = _nvcc_toolkit(nvcc)
        if toolkit is not None:
            return toolkit, f"nvcc on PATH ({nvcc})"
    if _is_toolkit("/usr/local/cuda"):
        return "/usr/local/cuda", "/usr/local/cuda"
    return None, "not found (no CUDA_HOME, no nvcc on PATH with cuda_runtime_api.h, no /usr/local/cuda)"


def nvidia_wheel_include_dirs() -> list[str]:
    """Include folders of the `nvidia-*` wheels beside PyTorch: `nvidia/cu<N>/include` (CUDA 13
    wheels) and `nvidia/<library>/include` (older ones), which hold the cuBLAS, cuSPARSE and
    cuSOLVER headers that PyTorch's CUDA headers include."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    found: list[str] = []
    for location in spec.submodule_search_locations:
        for path in sorted(glob.glob(os.path.join(location, "*", "include"))):
            if os.path.isdir(path) and path not in found:
                found.append(path)
    # The CUDA-13 layout (nvidia/cu13/include) first: it is what PyTorch's own libraries use.
    return sorted(found, key=lambda p: not re.fullmatch(r"cu\d+", os.path.basename(os.path.dirname(p))))


def _wants_cuda() -> bool:
    return os.environ.get("FORCE_CUDA", "0") == "1" or torch.version.cuda is not None


# PyTorch reads CUDA_HOME once, when torch.utils.cpp_extension is imported: decide it first.
CUDA_HOME_FOUND, CUDA_HOME_SOURCE = find_cuda_home() if _wants_cuda() else (None, "not needed (CPU build)")
if CUDA_HOME_FOUND is not None and not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
    os.environ["CUDA_HOME"] = CUDA_HOME_FOUND

from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def build_with_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def torch_base_version() -> str:
    """The PyTorch release the extension is compiled against, without the local label (`+cpu`,
    `+cu128`): the CPU and CUDA builds of one release share the C++ ABI of the CPU kernels."""
    return torch.__version__.split("+", 1)[0]


def _x86_64() -> bool:
    baseline = os.environ.get("MMFAST_CPU_BASELINE", "avx2")
    return platform.machine() in ("x86_64", "AMD64") and baseline == "avx2"


def cpu_capabilities() -> dict[str, list[str]]:
    """The builds of the CPU kernels (`csrc/**/*_cpu.cpp`), each capability's flags beyond
    `cpu_flags()`, lowest first. On x86-64 an AVX2 and an AVX-512 build, compiled as ATen compiles
    its own (its AVX512 capability: AVX512F/BW/VL/DQ); the library chooses one when it loads
    (csrc/engine/cpu_capability.h). Elsewhere (or with MMFAST_CPU_BASELINE other than avx2) one
    build for the compiler's default target."""
    if not _x86_64():
        return {"DEFAULT": ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]}
    return {
        "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
        "AVX512": [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512vl",
            "-mavx512dq",
            "-DCPU_CAPABILITY=AVX512",
            "-DCPU_CAPABILITY_AVX512",
        ],
    }


def cpu_flags() -> list[str]:
    """Every C++ source's flags: x86-64-v3 (AVX2/FMA) code, which the loader refuses on CPUs
    without AVX2 (falling back to the reference ops), and the list of kernel builds."""
    flags = ["-O3", "-fopenmp", "-fvisibility=hidden"]
    if _x86_64():
        flags.append("-march=x86-64-v3")
    flags += [f"-DMMFAST_CPU_BUILT_{capability}" for capability in cpu_capabilities()]
    return flags


def build_plan() -> dict:
    """What `mmfast._C` is built from and how, as plain data (also printed by --print-config)."""
    # csrc/module.cpp, the shared engine (csrc/engine/) and one folder per op (csrc/ops/<op>/);
    # files ending in _cuda.cpp are CUDA glue, built only into the CUDA extension.
    # files ending in _cpu.cpp are the CPU kernels, built once per CPU capability (cpu_capabilities).
    all_sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    kernel_sources = [s for s in all_sources if s.endswith("_cpu.cpp")]
    sources = [s for s in all_sources if not s.endswith(("_cuda.cpp", "_cpu.cpp"))]
    cuda_glue = [s for s in all_sources if s.endswith("_cuda.cpp")]
    plan = {
        "extension": "CppExtension",
        "sources": sources,
        "cpu_kernel_sources": kernel_sources,
        "cpu_capabilities": cpu_capabilities(),
        "include_dirs": [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "kernels")],
        "extra_compile_args": {"cxx": cpu_flags()},
        "extra_link_args": ["-fopenmp"],
        "torch_version": torch.__version__,
        "install_requires_torch": f"torch=={torch_base_version()}",
    }
    if build_with_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        plan["extension"] = "CUDAExtension"
        plan["sources"] = sources + cuda_glue + sorted(glob.glob("kernels/*.cu"))
        plan["cuda_home"] = CUDA_HOME_FOUND
        plan["cuda_home_source"] = CUDA_HOME_SOURCE
        # The toolkit's headers before the wheels' (which may ship another minor version of the
        # runtime headers); PyTorch appends its own include folders and the toolkit's after these.
        toolkit = [os.path.join(CUDA_HOME_FOUND, "include")] if CUDA_HOME_FOUND else []
        plan["include_dirs"] += toolkit + nvidia_wheel_include_dirs()
        plan["extra_compile_args"]["cxx"].append("-DMMFAST_WITH_CUDA")
        plan["extra_compile_args"]["nvcc"] = ["-O3", "-DMMFAST_WITH_CUDA", "--use_fast_math", "-lineinfo"]
        plan["cuda_arch_list"] = os.environ["TORCH_CUDA_ARCH_LIST"]
    return plan


def cuda_gencode_flags() -> list[str]:
    """The `-gencode` flags nvcc gets for TORCH_CUDA_ARCH_LIST, computed by the same PyTorch
    function that CUDAExtension's build uses."""
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    return _get_cuda_arch_flags()


def extension():
    plan = build_plan()
    kind = CUDAExtension if plan["extension"] == "CUDAExtension" else CppExtension
    ext = kind(
        "mmfast._C",
        plan["sources"],
        include_dirs=plan["include_dirs"],
        extra_compile_args=plan["extra_compile_args"],
        extra_link_args=plan["extra_link_args"],
        # Not compiled with the sources: MmfastBuildExtension compiles them once per capability.
        depends=plan["cpu_kernel_sources"] + sorted(glob.glob("csrc/**/*.h", recursive=True)),
    )
    ext.cpu_kernel_sources = plan["cpu_kernel_sources"]
    ext.cpu_capabilities = plan["cpu_capabilities"]
    return ext


def build_config_record() -> dict:
    """What `mmfast._version_check` compares with the running PyTorch."""
    return {
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "with_cuda": build_with_cuda(),
        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if build_with_cuda() else None,
    }


def build_jobs() -> int:
    """Parallel compile jobs: MAX_JOBS (PyTorch's ninja builds read it too), else one per CPU."""
    value = os.environ.get("MAX_JOBS", "")
    return max(1, int(value)) if value.isdigit() else max(1, len(os.sched_getaffinity(0)))


def _compile_in_parallel(compiler, jobs: int) -> None:
    """Without ninja, PyTorch's build compiles one source after another (distutils). This keeps its
    per-source logic (nvcc for .cu files, the flags, a ccache wrapper) but only records the commands
    it would run (distutils runs them through `call`, or `spawn` in older setuptools), then runs
    them `jobs` at a time."""
    if jobs < 2 or getattr(compiler, "_mmfast_parallel", False):
        return
    serial_compile = compiler.compile
    runners = {name: getattr(compiler, name) for name in ("call", "spawn") if hasattr(compiler, name)}

    def run(recorded: tuple[str, list, dict]) -> None:
        from setuptools.errors import CompileError

        name, command, options = recorded
        try:
            runners[name](command, **options)
        except Exception as error:  # CalledProcessError, OSError, spawn's DistutilsExecError
            raise CompileError(error) from error

    def compile(sources, *args, **kwargs):
        commands: list[tuple[str, list, dict]] = []

        def recorder(name):
            return lambda command, **options: commands.append((name, list(command), options))

        for name in runners:
            setattr(compiler, name, recorder(name))
        try:
            objects = serial_compile(sources, *args, **kwargs)
        finally:
            for name, runner in runners.items():
                setattr(compiler, name, runner)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(run, commands))  # the first failure raises, as in the serial build
        return objects

    compiler.compile = compile
    compiler._mmfast_parallel = True


class MmfastBuildExtension(BuildExtension):
    """PyTorch's BuildExtension, plus: no debug info in wheels, and the build record beside `_C`."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if build_with_cuda() and not self.build_temp.endswith("-cuda"):
            # Other flags and headers than the CPU build's: objects of their own, so that
            # alternating CPU and CUDA builds each recompile only what changed.
            self.build_temp += "-cuda"

    def build_extension(self, ext) -> None:
        keep_debug = self.inplace or os.environ.get("MMFAST_KEEP_DEBUG_INFO", "0") == "1"
        if not keep_debug and "-Wl,--strip-debug" not in ext.extra_link_args:
            # A link flag only: the object files stay shared with the in-place developer build.
            ext.extra_link_args = [*ext.extra_link_args, "-Wl,--strip-debug"]
        if not self.use_ninja:
            _compile_in_parallel(self.compiler, build_jobs())
        ext.extra_objects = self._compile_cpu_kernels(ext)
        super().build_extension(ext)

    def _compile_cpu_kernels(self, ext) -> list[str]:
        """Compiles every CPU kernel source once per capability, each build in its own object folder
        with the sources' flags plus the capability's, and returns the objects lowest capability
        first. They are linked after the other objects in that order, so that where builds emit the
        same inline function of a header (ATen's, the standard library's: weak symbols, of which
        the linker keeps the first), the copy kept is the baseline's, which every CPU runs."""
        objects: list[str] = []
        per_language = isinstance(ext.extra_compile_args, dict)
        base_flags = ext.extra_compile_args["cxx"] if per_language else ext.extra_compile_args
        for capability, flags in ext.cpu_capabilities.items():
            cxx = [*base_flags, *flags]
            postargs = {**ext.extra_compile_args, "cxx": cxx} if per_language else cxx
            objects += self.compiler.compile(
                ext.cpu_kernel_sources,
                output_dir=os.path.join(self.build_temp, f"cpu-{capability}"),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs=postargs,
                depends=ext.depends,
            )
        return objects

    def run(self) -> None:
        super().run()
        for ext in self.extensions:
            package_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(package_dir, exist_ok=True)
            path = os.path.join(package_dir, BUILD_CONFIG_NAME)
            text = json.dumps(build_config_record(), indent=2, sort_keys=True) + "\n"
            if not os.path.exists(path) or Path(path).read_text(encoding="utf-8") != text:
                Path(path).write_text(text, encoding="utf-8")


USE_NINJA = os.environ.get("MMFAST_USE_NINJA") != "0"


def print_config() -> None:
    plan = build_plan()
    if plan["extension"] == "CUDAExtension":
        plan["nvcc_gencode_flags"] = cuda_gencode_flags()
    print(json.dumps(plan, indent=2))


# Run as a script (`python setup.py`, and by setuptools' build backend, which runs it as __main__);
# the tests import it for its functions.
if __name__ == "__main__":
    if sys.argv[1:] == ["--print-config"]:
        print_config()
        sys.exit(0)
    setup(
        ext_modules=[extension()],
        install_requires=[f"torch=={torch_base_version()}", "numpy"],
        # MMFAST_USE_NINJA=0: the distutils backend (compiled in parallel all the same), as without ninja.
        cmdclass={"build_ext": MmfastBuildExtension.with_options(use_ninja=USE_NINJA)},
    )
