"""What setup.py would build, from `python setup.py --print-config` (nothing is compiled): the CPU
extension by default, and with FORCE_CUDA=1 the CUDA extension with the kernels and one nvcc
`-gencode` per architecture of TORCH_CUDA_ARCH_LIST. The CUDA build itself needs a CUDA PyTorch;
.ci/check_cuda.sh compiles the device code with nvcc for the same architectures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _print_config(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("FORCE_CUDA", "TORCH_CUDA_ARCH_LIST")}
    result = subprocess.run(
        [sys.executable, "setup.py", "--print-config"],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(
    torch.version.cuda is not None, reason="a CUDA PyTorch builds the CUDA extension by default"
)
def test_default_build_is_the_cpu_extension():
    config = _print_config()
    assert config["extension"] == "CppExtension"
    assert not any(s.endswith((".cu", "_cuda.cpp")) for s in config["sources"])
    assert "csrc/module.cpp" in config["sources"]
    # Every op folder's schema file and CPU kernel are built.
    for op_dir in (REPO / "csrc" / "ops").iterdir():
        assert f"csrc/ops/{op_dir.name}/{op_dir.name}.cpp" in config["sources"]
    assert "nvcc" not in config["extra_compile_args"]
    assert config["install_requires_torch"] == f"torch=={torch.__version__.split('+')[0]}"


def test_force_cuda_builds_the_cuda_extension_for_each_listed_arch():
    config = _print_config(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="8.0;9.0")
    assert config["extension"] == "CUDAExtension"
    kernels = sorted(str(p.relative_to(REPO)) for p in (REPO / "kernels").glob("*.cu"))
    glue = sorted(str(p.relative_to(REPO)) for p in (REPO / "csrc").rglob("*_cuda.cpp"))
    assert kernels and glue and set(kernels + glue) <= set(config["sources"])
    assert config["cuda_arch_list"] == "8.0;9.0"
    assert config["nvcc_gencode_flags"] == [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90,code=sm_90",
    ]
    assert "-DMMFAST_WITH_CUDA" in config["extra_compile_args"]["cxx"]
    assert "-DMMFAST_WITH_CUDA" in config["extra_compile_args"]["nvcc"]


def test_force_cuda_without_an_arch_list_uses_the_default_list():
    config = _print_config(FORCE_CUDA="1")
    assert config["cuda_arch_list"] == "8.0;8.6;9.0"
    assert [flag.split("code=")[-1] for flag in config["nvcc_gencode_flags"]] == ["sm_80", "sm_86", "sm_90"]


def test_ptx_suffix_adds_a_ptx_target():
    config = _print_config(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0+PTX")
    assert "-gencode=arch=compute_90,code=compute_90" in config["nvcc_gencode_flags"]
