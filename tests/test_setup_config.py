"""What setup.py would build, from `python setup.py --print-config` (nothing is compiled): the CPU
extension by default, and with FORCE_CUDA=1 the CUDA extension with the kernels and one nvcc
`-gencode` per architecture of TORCH_CUDA_ARCH_LIST, the CUDA toolkit it finds by itself (from
CUDA_HOME, through an nvcc wrapper on PATH, or /usr/local/cuda) and the cuBLAS / cuSPARSE headers
of the nvidia-* wheels (faked here in temporary folders). The CUDA build itself needs a CUDA
PyTorch (`make cuda-wheel`); .ci/check_cuda.sh compiles the device code with nvcc for the same
architectures."""

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
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_CUDA", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "CUDA_PATH", "PYTHONPATH")
    }
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
    assert "cuda_home" not in config  # a CPU build looks for no CUDA toolkit
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


def _fake_toolkit(root: Path) -> Path:
    """A CUDA toolkit folder with the runtime header and an `nvcc` that answers a dry run as nvcc
    does (`#$ _HERE_=<its bin folder>`)."""
    (root / "include").mkdir(parents=True)
    (root / "include" / "cuda_runtime_api.h").write_text("/* fake */\n")
    (root / "bin").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text('#!/bin/sh\necho "#$ _HERE_=$(dirname "$0")" >&2\n')
    nvcc.chmod(0o755)
    return root


def _on_path(folder: Path, nvcc_text: str | None = None, link_to: Path | None = None) -> str:
    folder.mkdir(parents=True)
    nvcc = folder / "nvcc"
    if link_to is not None:
        nvcc.symlink_to(link_to)
    else:
        nvcc.write_text(nvcc_text or "")
        nvcc.chmod(0o755)
    return f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin"


def test_cuda_home_is_found_through_an_nvcc_wrapper_script(tmp_path: Path):
    """The `nvcc` on PATH is a script in a bin folder whose parent has no CUDA headers (as
    /usr/local/bin/nvcc on the CI machine): the toolkit is the one nvcc itself reports."""
    toolkit = _fake_toolkit(tmp_path / "cuda-13.0")
    path = _on_path(tmp_path / "local" / "bin", f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    config = _print_config(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0", PATH=path)
    assert config["cuda_home"] == str(toolkit)
    assert config["cuda_home_source"] == f"nvcc on PATH ({tmp_path / 'local' / 'bin' / 'nvcc'})"
    assert config["include_dirs"][2] == str(toolkit / "include")


def test_cuda_home_is_found_through_an_nvcc_symlink(tmp_path: Path):
    toolkit = _fake_toolkit(tmp_path / "cuda")
    path = _on_path(tmp_path / "bin", link_to=toolkit / "bin" / "nvcc")
    assert _print_config(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0", PATH=path)["cuda_home"] == str(toolkit)


def test_cuda_home_from_the_environment_wins(tmp_path: Path):
    toolkit = _fake_toolkit(tmp_path / "elsewhere")
    path = _on_path(tmp_path / "bin", f'#!/bin/sh\nexec {_fake_toolkit(tmp_path / "other")}/bin/nvcc "$@"\n')
    config = _print_config(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0", PATH=path, CUDA_HOME=str(toolkit))
    assert (config["cuda_home"], config["cuda_home_source"]) == (str(toolkit), "$CUDA_HOME")


def test_without_a_usable_nvcc_the_default_toolkit_is_used(tmp_path: Path):
    path = _on_path(tmp_path / "bin", "#!/bin/sh\nexit 1\n")  # no toolkit beside it, no dry run
    config = _print_config(FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0", PATH=path)
    default = "/usr/local/cuda" if Path("/usr/local/cuda/include/cuda_runtime_api.h").is_file() else None
    assert config["cuda_home"] == default
    if default is None:
        assert config["cuda_home_source"].startswith("not found")


def test_the_nvidia_wheels_headers_come_after_the_toolkits(tmp_path: Path):
    """PyTorch's CUDA headers include cublas_v2.h and cusparse.h, which ship in the nvidia-* wheels
    (nvidia/cu13/include for CUDA 13, nvidia/<library>/include before), not in a minimal toolkit."""
    toolkit = _fake_toolkit(tmp_path / "cuda")
    site = tmp_path / "site"
    for folder in ("nvidia/cublas/include", "nvidia/cu13/include", "nvidia/cudnn/lib"):
        (site / folder).mkdir(parents=True)
    config = _print_config(
        FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0", CUDA_HOME=str(toolkit), PYTHONPATH=str(site)
    )
    dirs = config["include_dirs"]
    assert dirs[2] == str(toolkit / "include")
    # (A CUDA PyTorch's own nvidia-* wheels may come after these.)
    assert [d for d in dirs if d.startswith(str(site))] == [
        str(site / "nvidia" / "cu13" / "include"),
        str(site / "nvidia" / "cublas" / "include"),
    ]


def _setup_module():
    """setup.py imported for its functions (it calls setup() only when run as a script)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mmfast_setup_under_test", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("runner", ["call", "spawn"])  # setuptools' distutils, older ones
def test_without_ninja_the_sources_still_compile_in_parallel(runner):
    """PyTorch's distutils backend (no ninja) compiles one source after another; setup.py lets it
    decide each command (nvcc or the C++ compiler, flags) and runs the commands concurrently."""
    import threading
    import time

    from setuptools.errors import CompileError

    setup_module = _setup_module()
    running, most, lock = [0], [0], threading.Lock()

    class Compiler:  # the part of a distutils CCompiler that compile() uses
        def run(self, command, **options):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.2)
            with lock:
                running[0] -= 1
            if command[-1] == "bad.o":
                raise OSError("command failed")

        call = spawn = run

        def compile(self, sources, output_dir=None, **options):
            for source in sources:
                getattr(self, runner)(["cc", "-c", source, "-o", source.replace(".cpp", ".o")])
            return [source.replace(".cpp", ".o") for source in sources]

    compiler = Compiler()
    setup_module._compile_in_parallel(compiler, 4)
    setup_module._compile_in_parallel(compiler, 4)  # a second build_extension call: wrapped once
    started = time.monotonic()
    assert compiler.compile([f"s{i}.cpp" for i in range(8)]) == [f"s{i}.o" for i in range(8)]
    assert most[0] == 4 and time.monotonic() - started < 1.2
    with pytest.raises(CompileError, match="command failed"):
        compiler.compile(["a.cpp", "bad.cpp"])
    assert setup_module.build_jobs() >= 1


def test_the_cuda_objects_have_a_build_folder_of_their_own(monkeypatch):
    setup_module = _setup_module()
    from setuptools import Distribution

    command = setup_module.MmfastBuildExtension(Distribution({"ext_modules": [setup_module.extension()]}))
    command.ensure_finalized()
    assert not command.build_temp.endswith("-cuda")
    monkeypatch.setenv("FORCE_CUDA", "1")
    cuda_command = setup_module.MmfastBuildExtension(Distribution({"ext_modules": []}))
    cuda_command.ensure_finalized()
    assert cuda_command.build_temp == command.build_temp + "-cuda"
