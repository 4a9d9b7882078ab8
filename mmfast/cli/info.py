"""``mmfast info``: versions, build, and which implementation each op uses."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from importlib import resources
from typing import Any


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_info(capability: dict[str, Any] | None) -> dict[str, Any]:
    """The CPU model, the ISA extensions that decide the kernels' speed, and which build of the
    CPU kernels runs (``mmfast._backend.cpu_capability()``)."""
    from mmfast._backend import cpu_description

    return {**cpu_description(), "kernels": capability}


def collect_info() -> dict[str, Any]:
    """Versions, the extension's build configuration and load state, and ``backend_info()``."""
    import torch

    import mmfast
    from mmfast import _backend
    from mmfast._info import op_table

    build_file = resources.files("mmfast") / "_build_config.json"
    build = json.loads(build_file.read_text()) if build_file.is_file() else {}
    return {
        "versions": {
            "mmfast": mmfast.__version__,
            "torch": torch.__version__,
            "triton": _version("triton"),
            "python": platform.python_version(),
        },
        "build": {
            **build,
            "extension_loaded": _backend.extension_loaded(),
            "extension_error": _backend.load_error(),
            "requested_backend": _backend.requested_backend(),
            "cuda_available": torch.cuda.is_available(),
        },
        "cpu": _cpu_info(_backend.cpu_capability()),
        "ops": op_table(),
        "backends": mmfast.backend_info(),
    }


def run_info(as_json: bool = False) -> int:
    info = collect_info()
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print("versions:")
    for name, version in info["versions"].items():
        print(f"  {name:<8} {version}")
    print("build:")
    for name, value in info["build"].items():
        print(f"  {name:<18} {value}")
    cpu = info["cpu"]
    print("cpu:")
    print(f"  {'model':<18} {cpu['model']}")
    print(f"  {'isa':<18} {', '.join(cpu['isa']) or 'none of AVX2, AVX-512, AVX512-BF16, AMX'}")
    kernels = cpu["kernels"]
    if kernels is not None:
        built = ", ".join(kernels["built"])
        print(f"  {'kernels':<18} {kernels['active']} build of {built} ({kernels['reason']})")
    print("ops (inputs: what the compiled kernels take in this build; triton: what its kernels take):")
    for row in info["ops"]:
        triton = f", triton {row['triton_inputs']}" if row["triton_inputs"] else ""
        print(f"  {row['op']:<18} inputs {row['inputs']}{triton}: {row['summary']}")
    backends = info["backends"]
    width = max(len(op) for op in backends)
    print("backends (mmfast.backend_info()):")
    print(f"  {'op':<{width}}  device  implementation")
    for op, row in backends.items():
        for device, implementation in row.items():
            print(f"  {op:<{width}}  {device:<6}  {implementation}")
    return 0
