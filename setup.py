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
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys
from pathlib import Path

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;8.6;9.0"
BUILD_CONFIG_NAME = "_build_config.json"


def build_with_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def torch_base_version() -> str:
    """The PyTorch release the extension is compiled against, without the local label (`+cpu`,
    `+cu128`): the CPU and CUDA builds of one release share the C++ ABI of the CPU kernels."""
    return torch.__version__.split("+", 1)[0]


def cpu_flags() -> list[str]:
    """x86-64-v3 (AVX2/FMA) code and at::vec's AVX2 registers; the loader refuses the build on CPUs
    without AVX2 and falls back to the reference ops."""
    flags = ["-O3", "-fopenmp", "-fvisibility=hidden"]
    if platform.machine() in ("x86_64", "AMD64") and os.environ.get("MMFAST_CPU_BASELINE", "avx2") == "avx2":
        flags += ["-march=x86-64-v3", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-DMMFAST_CPU_AVX2"]
    return flags


def build_plan() -> dict:
    """What `mmfast._C` is built from and how, as plain data (also printed by --print-config)."""
    # csrc/module.cpp, the shared engine (csrc/engine/) and one folder per op (csrc/ops/<op>/);
    # files ending in _cuda.cpp are CUDA glue, built only into the CUDA extension.
    all_sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    sources = [s for s in all_sources if not s.endswith("_cuda.cpp")]
    cuda_glue = [s for s in all_sources if s.endswith("_cuda.cpp")]
    plan = {
        "extension": "CppExtension",
        "sources": sources,
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
    return kind(
        "mmfast._C",
        plan["sources"],
        include_dirs=plan["include_dirs"],
        extra_compile_args=plan["extra_compile_args"],
        extra_link_args=plan["extra_link_args"],
    )


def build_config_record() -> dict:
    """What `mmfast._version_check` compares with the running PyTorch."""
    return {
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "with_cuda": build_with_cuda(),
        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if build_with_cuda() else None,
    }


class MmfastBuildExtension(BuildExtension):
    """PyTorch's BuildExtension, plus: no debug info in wheels, and the build record beside `_C`."""

    def build_extension(self, ext) -> None:
        keep_debug = self.inplace or os.environ.get("MMFAST_KEEP_DEBUG_INFO", "0") == "1"
        if not keep_debug and "-Wl,--strip-debug" not in ext.extra_link_args:
            # A link flag only: the object files stay shared with the in-place developer build.
            ext.extra_link_args = [*ext.extra_link_args, "-Wl,--strip-debug"]
        super().build_extension(ext)

    def run(self) -> None:
        super().run()
        for ext in self.extensions:
            package_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(package_dir, exist_ok=True)
            path = os.path.join(package_dir, BUILD_CONFIG_NAME)
            text = json.dumps(build_config_record(), indent=2, sort_keys=True) + "\n"
            if not os.path.exists(path) or Path(path).read_text(encoding="utf-8") != text:
                Path(path).write_text(text, encoding="utf-8")


def print_config() -> None:
    plan = build_plan()
    if plan["extension"] == "CUDAExtension":
        plan["nvcc_gencode_flags"] = cuda_gencode_flags()
    print(json.dumps(plan, indent=2))


if __name__ == "__main__" and sys.argv[1:] == ["--print-config"]:
    print_config()
    sys.exit(0)

setup(
    ext_modules=[extension()],
    install_requires=[f"torch=={torch_base_version()}", "numpy"],
    cmdclass={"build_ext": MmfastBuildExtension.with_options(use_ninja=True)},
)
