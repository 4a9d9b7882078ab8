"""Build of mmfast's C++ (and, on CUDA machines, CUDA) extension `mmfast._C`.

The CPU extension is always built. The CUDA sources (`csrc/cuda/*.cpp`, `kernels/*.cu`) are
added when PyTorch was built with CUDA or `FORCE_CUDA=1`; `TORCH_CUDA_ARCH_LIST` then defaults to
"8.0;8.6;9.0" because PyTorch's own arch detection fails on a machine with no visible GPU.
"""

from __future__ import annotations

import glob
import os
import platform

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;8.6;9.0"


def build_with_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def cpu_flags() -> list[str]:
    """x86-64-v3 (AVX2/FMA) code and at::vec's AVX2 registers; the loader refuses the build on CPUs
    without AVX2 and falls back to the reference ops."""
    flags = ["-O3", "-fopenmp", "-fvisibility=hidden"]
    if platform.machine() in ("x86_64", "AMD64") and os.environ.get("MMFAST_CPU_BASELINE", "avx2") == "avx2":
        flags += ["-march=x86-64-v3", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-DMMFAST_CPU_AVX2"]
    return flags


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "kernels")]
    extra_compile_args = {"cxx": cpu_flags()}
    if not build_with_cuda():
        return CppExtension(
            "mmfast._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    sources += sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("kernels/*.cu"))
    extra_compile_args["cxx"].append("-DMMFAST_WITH_CUDA")
    extra_compile_args["nvcc"] = ["-O3", "-DMMFAST_WITH_CUDA", "--use_fast_math", "-lineinfo"]
    return CUDAExtension(
        "mmfast._C",
        sources,
        include_dirs=include_dirs,
        extra_compile_args=extra_compile_args,
        extra_link_args=["-fopenmp"],
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
