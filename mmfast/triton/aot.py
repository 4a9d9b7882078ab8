"""Ahead-of-time compilation of every Triton kernel of mmfast for NVIDIA GPUs, on a machine without one.

    python -m mmfast.triton.aot --arch 80,90 [--jobs N] [--module M] [--only REGEX] [--output-dir DIR]
    python -m mmfast.triton.aot --list

Each launch the kernels can make (every autotune config the autotuner can pick for it, every dtype
and `tl.dot` precision, a few realistic shapes) is compiled with ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32), options={num_warps, num_stages})`` through Triton's own cache
(``TRITON_CACHE_DIR``, else ``~/.triton/cache``), so the cubins can be inspected afterwards. Its
registers and spill bytes come from the ptxas log of the compile (kept beside the cubin in the
cache, as ``<kernel>.ptxas.log``, for the runs that find the cubin cached), checked against the
registers of ``cuobjdump --dump-resource-usage`` (the cuobjdump Triton bundles); its shared memory
from the compiled kernel's metadata. The table goes to ``TRITON_AOT.md`` and ``TRITON_AOT.json`` in
``--output-dir``. The exit status is 1 when a case fails to compile, spills (any spill store or
load: every case is a launch the kernels make) or needs more shared memory than the architecture
gives a block (sm_80: 163 KiB, sm_90: 227 KiB); 2 for a usage error.

The protocol (for a new op's Triton kernels): the op's Triton module, the one its descriptor names
(``OpDescriptor(triton="mmfast.triton.<op>")``), defines ``aot_cases()``, a generator of `AotCase`
records, one per launch it can make. Build them with `launch_cases` from the arguments the launcher
passes, written with `Ptr` for tensors (``Ptr("float16")``; a tuple of them for a tuple argument;
None where the launcher passes None) and plain ints, bools and constexpr values for the rest, for
every dtype of `variants` (float32 with IEEE and with TF32 dots, float16, bfloat16):

    def aot_cases():
        from mmfast.triton import aot

        for variant in aot.variants():
            p = aot.Ptr(variant.dtype)
            yield from aot.launch_cases(
                my_kernel, dict(X=p, OUT=p, N=4096, DOT_PRECISION=variant.precision),
                label="N=4096", dtype=variant.name,
            )

For an autotuned kernel `launch_cases` yields one case per config of the autotuner's own list
(``kernel.configs``) that its ``early_config_prune`` keeps for those arguments, exactly as the
autotuner would: the config lists live only in the kernel modules. For a kernel with fixed tiles,
pass them in the arguments and ``num_warps`` / ``num_stages`` as the launcher does. Derive the
arguments with the same helpers the launcher uses (tile sizes, splits), so that the cases follow
the launcher when it changes. `collect` imports every registered op's Triton module (so a new op is
picked up from its descriptor, and one without ``aot_cases()`` is an error), de-duplicates the
cases of kernels that several ops share, and `main` compiles them for each ``--arch``.

Triton must build compiled kernels, not interpreted ones: this command sets ``TRITON_INTERPRET=0``
before it imports the kernels, and fails if they were already imported interpreted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import io
import json
import multiprocessing
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AotCase",
    "Ptr",
    "Variant",
    "collect",
    "launch_cases",
    "main",
    "parse_ptxas_log",
    "parse_resource_usage",
    "variants",
]

# Dynamic shared memory a block may use, in bytes (the CUDA programming guide's per-architecture
# table: "maximum amount of shared memory per thread block").
SHARED_MEMORY_LIMITS = {
    75: 64 * 1024,
    80: 163 * 1024,
    86: 99 * 1024,
    87: 163 * 1024,
    89: 99 * 1024,
    90: 227 * 1024,
    100: 227 * 1024,
    120: 99 * 1024,
}

# Multiprocessors of the GPU each case assumes where a launcher sizes its grid by the device (the
# row splits of the weight-gradient reductions): an A100's. It only sets integer arguments, whose
# values change the compiled code only through their divisibility by 16 and whether they are 1.
MULTIPROCESSORS = 108

_POINTER_TYPES = {
    "float64": ("fp64", 8),
    "float32": ("fp32", 4),
    "float16": ("fp16", 2),
    "bfloat16": ("bf16", 2),
    "int64": ("i64", 8),
    "int32": ("i32", 4),
}
_DIVISIBLE = [["tt.divisibility", 16]]


@dataclasses.dataclass(frozen=True)
class Ptr:
    """A tensor argument of a case: a pointer to ``dtype`` elements (a torch dtype name), 16-byte
    aligned like every allocation of PyTorch's allocators. The autotuners' prune functions read
    its `element_size`."""

    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in _POINTER_TYPES:
            raise ValueError(f"Ptr: unknown dtype {self.dtype!r}; expected one of {sorted(_POINTER_TYPES)}")

    def element_size(self) -> int:
        return _POINTER_TYPES[self.dtype][1]

    @property
    def triton_type(self) -> str:
        return "*" + _POINTER_TYPES[self.dtype][0]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One dtype a launcher runs: the tensors' ``dtype``, the `tl.dot` ``precision`` that
    `mmfast.triton._common.dot_precision` gives it, and its ``name`` in the report."""

    dtype: str
    precision: str
    name: str


def variants(dtypes: Sequence[str] = ("float32", "float16", "bfloat16")) -> list[Variant]:
    """The variants of ``dtypes``: float32 twice, with IEEE dots (PyTorch's default matmul precision,
    "highest") and with TF32 dots (after ``torch.set_float32_matmul_precision("high")``)."""
    out = []
    for dtype in dtypes:
        out.append(Variant(dtype, "ieee", dtype))
        if dtype == "float32":
            out.append(Variant(dtype, "tf32", "float32 tf32"))
    return out


@dataclasses.dataclass(frozen=True)
class AotCase:
    """One launch to compile: ``triton.compile(ASTSource(kernel, signature, constexprs, attrs),
    options={num_warps, num_stages, ...})``.

    Attributes:
        kernel: the ``@triton.jit`` function.
        signature: parameter name -> Triton type (``"*fp16"``, ``"i32"``, ``"constexpr"``; a tuple of
            them for a tuple argument), every parameter of the kernel.
        constexprs: argument path (``(index,)``, or ``(index, element)`` inside a tuple) -> value,
            for every constexpr (the config's tiles included) and every argument that Triton
            specializes into one (None, and integers equal to 1).
        num_warps, num_stages: the launch options (None: Triton's default, as the launcher leaves it).
        label: the shape and variant of the launch, for the report.
        dtype: the `Variant` name (``"float32"``, ``"float32 tf32"``, ``"float16"``, ...).
        config: the autotune config (or the fixed tiles), for the report.
        attrs: argument path -> attributes (16-divisibility of aligned pointers and integers).
        options: further compile options of the config (``num_ctas``, ``maxnreg``) when set.
        module: the module whose ``aot_cases()`` yielded the case (set by `collect`).
    """

    kernel: Any
    signature: Mapping[str, Any]
    constexprs: Mapping[tuple, Any]
    num_warps: int | None
    num_stages: int | None
    label: str
    dtype: str
    config: str = ""
    attrs: Mapping[tuple, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    module: str = ""

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def compile_options(self) -> dict[str, Any]:
        options = dict(self.options)
        if self.num_warps is not None:
            options["num_warps"] = self.num_warps
        if self.num_stages is not None:
            options["num_stages"] = self.num_stages
        return options

    def key(self) -> tuple:
        """What decides the compiled code: equal keys compile to the same cubin."""
        return (
            getattr(self.kernel, "cache_key", self.name),
            repr(sorted(self.signature.items())),
            repr(sorted(self.constexprs.items())),
            repr(sorted(self.attrs.items())),
            repr(sorted(self.compile_options().items())),
        )


def _jit_function(kernel):
    """The ``@triton.jit`` function under an autotuner (or heuristics) wrapper."""
    from triton.runtime.jit import JITFunction

    inner = kernel
    while not isinstance(inner, JITFunction):
        if not hasattr(inner, "fn"):
            raise TypeError(
                f"{kernel!r} is not a compiled Triton kernel (interpreted? set TRITON_INTERPRET=0)"
            )
        inner = inner.fn
    return inner


def specialize(value: Any, specialize_ints: bool = True) -> tuple[Any, Any]:
    """``(type, attribute)`` of a run-time argument, by the rules Triton's launcher applies
    (``native_specialize_impl``): None and ints equal to 1 become constexprs, ints and aligned
    pointers that are multiples of 16 get ``"D"`` (divisibility), tuples element by element."""
    if isinstance(value, tuple):
        # Triton specializes the elements of a tuple whatever the parameter's do_not_specialize.
        pairs = [specialize(v) for v in value]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    if value is None:
        return "constexpr", None
    if isinstance(value, Ptr):
        return value.triton_type, "D"
    if isinstance(value, bool):
        return "u1", None
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            kind = "i32"
        elif -(2**63) <= value < 2**63:
            kind = "i64"
        else:
            kind = "u64"
        if not specialize_ints:
            return kind, None
        if value == 1:
            return "constexpr", 1
        return kind, "D" if value % 16 == 0 else ""
    if isinstance(value, float):
        return "fp32", None
    raise TypeError(f"cannot describe a kernel argument of type {type(value).__name__}: {value!r}")


def _flatten(path: tuple, kind: Any, attr: Any, value: Any) -> Iterator[tuple[tuple, Any, Any, Any]]:
    if isinstance(kind, tuple):
        for index, (k, a, v) in enumerate(zip(kind, attr, value)):
            yield from _flatten((*path, index), k, a, v)
    else:
        yield path, kind, attr, value


def _describe_config(blocks: Mapping[str, Any], num_warps, num_stages, options: Mapping[str, Any]) -> str:
    parts = [" ".join(f"{k}={v}" for k, v in blocks.items())]
    parts.append(f"{num_warps if num_warps is not None else 'default'} warps")
    parts.append(f"{num_stages if num_stages is not None else 'default'} stages")
    parts += [f"{k}={v}" for k, v in options.items()]
    return ", ".join(p for p in parts if p)


def _make_case(
    fn, values: Mapping[str, Any], blocks, num_warps, num_stages, options, label, dtype
) -> AotCase:
    names = [p.name for p in fn.params]
    missing = [n for n in names if n not in values]
    extra = [n for n in values if n not in names]
    if missing or extra:
        raise ValueError(
            f"{fn.__name__} ({label}, {dtype}): arguments missing {missing}, unknown {extra} "
            "(the case must pass every kernel parameter, the config's tiles aside)"
        )
    signature: dict[str, Any] = {}
    constexprs: dict[tuple, Any] = {}
    attrs: dict[tuple, Any] = {}
    for index, param in enumerate(fn.params):
        value = values[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(index,)] = value
            continue
        if getattr(param, "annotation_type", ""):
            raise NotImplementedError(f"{fn.__name__}.{param.name}: annotated parameters are not supported")
        kind, attr = specialize(value, specialize_ints=not param.do_not_specialize)
        signature[param.name] = kind
        for path, leaf_kind, leaf_attr, leaf_value in _flatten((index,), kind, attr, value):
            if leaf_kind == "constexpr":
                constexprs[path] = leaf_value
            elif leaf_attr == "D" and not param.do_not_specialize_on_alignment:
                attrs[path] = _DIVISIBLE
    return AotCase(
        kernel=fn,
        signature=signature,
        constexprs=constexprs,
        num_warps=num_warps,
        num_stages=num_stages,
        label=label,
        dtype=dtype,
        config=_describe_config(blocks, num_warps, num_stages, options),
        attrs=attrs,
        options=dict(options),
    )


def launch_cases(
    kernel,
    args: Mapping[str, Any],
    *,
    label: str,
    dtype: str,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> list[AotCase]:
    """The cases of one launch of ``kernel`` with ``args`` (every parameter by name: `Ptr` for
    tensors, None, ints, bools and constexpr values, as the launcher passes them).

    An autotuned kernel gives one case per config of its autotuner's list that its
    ``early_config_prune`` keeps for these arguments (the parameters that are not constexprs as the
    positional arguments, the constexprs as the keyword arguments, as the launchers pass them); the
    configs supply the tiles, ``num_warps`` and ``num_stages``. A plain ``@triton.jit`` kernel gives
    one case with the given ``num_warps`` / ``num_stages``."""
    from triton.runtime.autotuner import Autotuner

    fn = _jit_function(kernel)
    if not isinstance(kernel, Autotuner):
        blocks = {k: v for k, v in args.items() if k.startswith("BLOCK_")}
        return [_make_case(fn, args, blocks, num_warps, num_stages, {}, label, dtype)]
    if num_warps is not None or num_stages is not None:
        raise ValueError(f"{fn.__name__}: an autotuned kernel takes num_warps / num_stages from its configs")
    constexpr_names = {p.name for p in fn.params if p.is_constexpr}
    positional = {k: v for k, v in args.items() if k not in constexpr_names}
    keywords = {k: v for k, v in args.items() if k in constexpr_names}
    configs = list(kernel.configs)
    prune = getattr(kernel, "early_config_prune", None)
    if prune is not None:
        configs = list(prune(configs, positional, **keywords))
    if getattr(kernel, "perf_model", None) is not None:
        raise NotImplementedError(f"{fn.__name__}: autotuners with a perf_model / top_k are not supported")
    cases = []
    for config in configs:
        options = {}
        if getattr(config, "num_ctas", 1) not in (None, 1):
            options["num_ctas"] = config.num_ctas
        if getattr(config, "maxnreg", None) is not None:
            options["maxnreg"] = config.maxnreg
        values = {**args, **config.kwargs}
        cases.append(
            _make_case(fn, values, config.kwargs, config.num_warps, config.num_stages, options, label, dtype)
        )
    return cases


# --- collection ---------------------------------------------------------------------------------


def _force_compiled_kernels() -> None:
    """Makes `@triton.jit` build compiled kernels in this process (before the kernels are imported)."""
    common = sys.modules.get("mmfast.triton._common")
    if common is not None and common.INTERPRETED:
        raise RuntimeError(
            "the Triton kernels were imported with TRITON_INTERPRET=1; run the ahead-of-time "
            "compilation in a process of its own (python -m mmfast.triton.aot)"
        )
    os.environ["TRITON_INTERPRET"] = "0"


def triton_modules() -> list[str]:
    """The Triton module of every registered op (`mmfast.ops._registry`), in registration order."""
    import mmfast.ops  # noqa: F401  (registers the ops)
    from mmfast.ops import _registry

    modules = []
    for descriptor in _registry.descriptors():
        if descriptor.triton and descriptor.triton not in modules:
            modules.append(descriptor.triton)
    return modules


def collect(modules: Iterable[str] | None = None) -> list[AotCase]:
    """Every case of ``modules`` (default: `triton_modules`), each once, in order."""
    import importlib

    _force_compiled_kernels()
    cases: list[AotCase] = []
    seen: set[tuple] = set()
    for name in triton_modules() if modules is None else modules:
        module = importlib.import_module(name)
        generate = getattr(module, "aot_cases", None)
        if generate is None:
            raise AttributeError(
                f"{name} has no aot_cases(): every op's Triton module declares the launches it makes "
                "(see mmfast.triton.aot)"
            )
        count = 0
        for case in generate():
            count += 1
            key = case.key()
            if key not in seen:
                seen.add(key)
                cases.append(dataclasses.replace(case, module=name))
        if count == 0:
            raise ValueError(f"{name}.aot_cases() yielded no case")
    return cases


def select(cases: Sequence[AotCase], only: Sequence[str] = ()) -> list[AotCase]:
    """The cases whose `describe` line matches one of the regular expressions ``only`` (all cases
    when there is none)."""
    patterns = [re.compile(pattern) for pattern in only]
    return [c for c in cases if not patterns or any(p.search(describe(c)) for p in patterns)]


def describe(case: AotCase) -> str:
    return f"{case.module} {case.name} {case.dtype} {case.label} {case.config}"


# --- compilation and its resource usage ----------------------------------------------------------

_PTXAS_REGISTERS = r"Used (\d+) registers"
_PTXAS_PROPERTIES = r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"


def parse_ptxas_log(text: str, name: str) -> dict[str, int] | None:
    """Registers, stack frame and spill stores / loads (bytes) of entry function ``name`` in a
    ``ptxas -v`` log, or None when the log does not describe it."""
    chunks = text.split("Compiling entry function '")
    for chunk in chunks[1:]:
        if not chunk.startswith(f"{name}'"):
            continue
        registers = re.search(_PTXAS_REGISTERS, chunk)
        properties = re.search(
            r"Function properties for " + re.escape(name) + r"\s*\n\s*" + _PTXAS_PROPERTIES, chunk
        )
        if registers is None or properties is None:
            return None
        stack, stores, loads = (int(g) for g in properties.groups())
        return {
            "registers": int(registers.group(1)),
            "stack": stack,
            "spill_stores": stores,
            "spill_loads": loads,
        }
    return None


def parse_resource_usage(text: str, name: str) -> dict[str, int] | None:
    """REG, STACK, SHARED (static) and LOCAL of function ``name`` in the output of
    ``cuobjdump --dump-resource-usage``, or None when it is not there."""
    match = re.search(
        r"Function " + re.escape(name) + r":\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text
    )
    if match is None:
        return None
    reg, stack, shared, local = (int(g) for g in match.groups())
    return {"registers": reg, "stack": stack, "static_shared": shared, "local": local}


def _ptxas_log_name(name: str) -> str:
    return f"{name}.ptxas.log"


def _compile(case: AotCase, arch: int) -> tuple[Any, str, bool]:
    """``(compiled kernel, ptxas log, cached)``: the ptxas log of this compile, or the one an earlier
    run kept in the cache; a cached cubin without one is compiled again."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.cache import get_cache_manager

    # ptxas prints its log (ptxas -v) to stdout with this set; it is not part of the cache key.
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"

    def build():
        source = ASTSource(
            fn=case.kernel,
            signature=dict(case.signature),
            constexprs=dict(case.constexprs),
            attrs=dict(case.attrs),
        )
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            kernel = triton.compile(
                source, target=GPUTarget("cuda", arch, 32), options=case.compile_options()
            )
        return kernel, captured.getvalue()

    kernel, log = build()
    cache = get_cache_manager(kernel.hash)
    if parse_ptxas_log(log, kernel.name) is not None:
        cache.put(log, _ptxas_log_name(kernel.name), binary=False)
        return kernel, log, False
    kept = cache.get_file(_ptxas_log_name(kernel.name))
    if kept is not None:
        return kernel, Path(kept).read_text(), True
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"
    try:
        kernel, log = build()
    finally:
        del os.environ["TRITON_ALWAYS_COMPILE"]
    cache.put(log, _ptxas_log_name(kernel.name), binary=False)
    return kernel, log, False


def _cache_relative(path: str) -> str:
    """``path`` relative to Triton's cache directory (``TRITON_CACHE_DIR``), when it is inside."""
    import triton

    try:
        return str(Path(path).resolve().relative_to(Path(triton.knobs.cache.dir).resolve()))
    except ValueError:
        return path


def _cuobjdump() -> str:
    import triton

    return triton.knobs.nvidia.cuobjdump.path


def arch_name(arch: int) -> str:
    return f"sm_{arch}a" if arch == 90 else f"sm_{arch}"


def verdict(row: Mapping[str, Any]) -> str:
    """ "spill" for any spill store or load, "shared memory" over the limit, else "ok"."""
    if row["spill_stores"] or row["spill_loads"]:
        return "spill"
    if row["shared"] > row["shared_limit"]:
        return "shared memory"
    return "ok"


def compile_case(case: AotCase, arch: int) -> dict[str, Any]:
    """Compiles ``case`` for ``arch`` and returns its report row (``status`` "ok", "spill",
    "shared memory" or "error")."""
    row: dict[str, Any] = {
        "module": case.module,
        "kernel": case.name,
        "config": case.config,
        "dtype": case.dtype,
        "shape": case.label,
        "arch": arch_name(arch),
        "num_warps": case.num_warps,
        "num_stages": case.num_stages,
    }
    start = time.perf_counter()
    try:
        kernel, log, cached = _compile(case, arch)
        usage = parse_ptxas_log(log, kernel.name)
        if usage is None:
            raise RuntimeError(f"no resource usage of {kernel.name} in the ptxas log:\n{log}")
        cubin = kernel.metadata_group[f"{kernel.name}.cubin"]
        dump = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", cubin], check=True, capture_output=True, text=True
        ).stdout
        resources = parse_resource_usage(dump, kernel.name)
        if resources is None:
            raise RuntimeError(f"no resource usage of {kernel.name} in cuobjdump's output:\n{dump}")
        if resources["registers"] != usage["registers"]:
            raise RuntimeError(
                f"ptxas says {usage['registers']} registers, cuobjdump {resources['registers']}"
            )
        shared = int(kernel.metadata.shared) + resources["static_shared"]
        limit = SHARED_MEMORY_LIMITS[arch]
        row.update(usage)
        row.update(
            local=resources["local"],
            shared=shared,
            shared_limit=limit,
            cubin=_cache_relative(cubin),
            cached=cached,
        )
        row["status"] = verdict(row)
    except Exception as error:  # every failure is a row of the report
        message = f"{type(error).__name__}: {error}".strip()
        row.update(status="error", error=message[:2000])
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


# Worker processes find the cases here: forked workers inherit them, spawned ones collect them again.
_CASES: list[AotCase] | None = None


def _init_worker(modules: Sequence[str] | None, only: Sequence[str]) -> None:
    global _CASES
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")
    if _CASES is None:
        _CASES = select(collect(modules), only)


def _run_task(task: tuple[int, int]) -> dict[str, Any]:
    index, arch = task
    assert _CASES is not None
    return compile_case(_CASES[index], arch)


def compile_all(
    cases: Sequence[AotCase],
    archs: Sequence[int],
    jobs: int,
    modules: Sequence[str] | None = None,
    only: Sequence[str] = (),
    progress=None,
) -> list[dict[str, Any]]:
    """The rows of every case for every arch, in order, compiled by ``jobs`` worker processes."""
    global _CASES
    _CASES = list(cases)
    tasks = [(index, arch) for arch in archs for index in range(len(cases))]
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    if jobs <= 1:
        _init_worker(modules, only)
        for position, task in enumerate(tasks):
            rows[position] = _run_task(task)
            if progress:
                progress(rows[position], position + 1, len(tasks))
        return rows  # type: ignore[return-value]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(modules, tuple(only)),
    ) as pool:
        futures = {pool.submit(_run_task, task): position for position, task in enumerate(tasks)}
        done = 0
        for future in concurrent.futures.as_completed(futures):
            position = futures[future]
            rows[position] = future.result()
            done += 1
            if progress:
                progress(rows[position], done, len(tasks))
    return rows  # type: ignore[return-value]


# --- report ------------------------------------------------------------------------------------


def _machine_and_versions() -> tuple[str, str]:
    """The machine and versions lines of the benchmark reports (`bench.report`), from a source
    checkout; a shorter description elsewhere."""
    try:
        from bench.report import machine_description, versions

        return machine_description(), versions()
    except ImportError:
        import torch

        import mmfast

        parts = [
            f"mmfast {mmfast.__version__}",
            f"torch {torch.__version__}",
            f"Python {platform.python_version()}",
        ]
        with contextlib.suppress(ImportError):
            import triton

            parts.append(f"triton {triton.__version__}")
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores", ", ".join(parts)


def _ptxas_version() -> str:
    import triton

    try:
        out = subprocess.run(
            [triton.knobs.nvidia.ptxas.path, "--version"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError, AttributeError):
        return "unknown"
    match = re.search(r"release (\S+), V(\S+)", out)
    return match.group(2) if match else out.strip().splitlines()[-1]


def failures(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in rows if row.get("status") != "ok"]


def _fmt_kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def markdown(rows: Sequence[Mapping[str, Any]], header: Mapping[str, str]) -> str:
    failed = failures(rows)
    out = ["# Triton ahead-of-time compilation", ""]
    out += [f"- {key}: {value}" for key, value in header.items()]
    out += [
        "- Each row is one launch the kernels can make: a config the autotuner can pick for that "
        "launch (its list after its prune), or the fixed tiles of a kernel that is not autotuned.",
        "- Registers and spill stores / loads (bytes) from the ptxas log, the registers checked "
        "against `cuobjdump --dump-resource-usage`; shared memory (KiB) from the kernel's metadata, "
        "against the architecture's limit per block.",
        "",
        "## Summary",
        "",
        "| kernel | arch | cases | max registers | spilling | max shared KiB | limit KiB | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["kernel"], row["arch"]), []).append(row)
    for (kernel, arch), group in groups.items():
        ok = [r for r in group if r["status"] != "error"]
        out.append(
            f"| {kernel} | {arch} | {len(group)} | {max((r['registers'] for r in ok), default='-')} | "
            f"{sum(1 for r in group if r['status'] == 'spill')} | "
            f"{_fmt_kib(max((r['shared'] for r in ok), default=None))} | "
            f"{_fmt_kib(group[0].get('shared_limit') or next((r['shared_limit'] for r in ok), None))} | "
            f"{sum(1 for r in group if r['status'] != 'ok')} |"
        )
    if failed:
        out += ["", "## Failures", ""]
        for row in failed:
            detail = row.get("error") or (
                f"{row['spill_stores']} B spill stores, {row['spill_loads']} B spill loads, "
                f"{row['shared']} B shared (limit {row['shared_limit']})"
            )
            out.append(
                f"- {row['kernel']} [{row['config']}] {row['dtype']} {row['shape']} {row['arch']}: "
                f"{row['status']}: {detail.splitlines()[0]}"
            )
    out += ["", "## Cases", ""]
    current = None
    for row in rows:
        if row["kernel"] != current:
            current = row["kernel"]
            out += [
                "",
                f"### {current}",
                "",
                "| config | dtype | shape | arch | registers | spill stores / loads B | shared KiB "
                "| status |",
                "|---|---|---|---|---|---|---|---|",
            ]
        if row["status"] == "error":
            cells = ["-", "-", "-"]
        else:
            cells = [
                str(row["registers"]),
                f"{row['spill_stores']} / {row['spill_loads']}",
                _fmt_kib(row["shared"]),
            ]
        out.append(
            f"| {row['config']} | {row['dtype']} | {row['shape']} | {row['arch']} | "
            + " | ".join(cells)
            + f" | {row['status']} |"
        )
    out.append("")
    return "\n".join(out)


def _parse_archs(text: str) -> list[int]:
    archs = []
    for part in text.split(","):
        part = part.strip().lower().removeprefix("sm_").removesuffix("a").replace(".", "")
        if not part:
            continue
        if not part.isdigit() or int(part) not in SHARED_MEMORY_LIMITS:
            raise argparse.ArgumentTypeError(
                f"unknown architecture {part!r}; expected some of {sorted(SHARED_MEMORY_LIMITS)}"
            )
        archs.append(int(part))
    if not archs:
        raise argparse.ArgumentTypeError("no architecture given")
    return archs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmfast.triton.aot",
        description="Compile every Triton kernel of mmfast ahead of time for NVIDIA GPUs (no GPU needed) "
        "and report registers, spills and shared memory.",
    )
    parser.add_argument(
        "--arch", type=_parse_archs, default=[80, 90], help="compute capabilities, e.g. 80,90"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="REGEX",
        help="only the cases whose line in --list ('module kernel dtype shape config') matches this "
        "regular expression (repeatable: any of them)",
    )
    parser.add_argument(
        "--module", action="append", default=None, help="only this Triton module (repeatable)"
    )
    parser.add_argument("--output-dir", type=Path, default=Path("bench"), help="where TRITON_AOT.md/.json go")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--quiet", action="store_true", help="no line per compile")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")

    try:
        import triton  # noqa: F401
    except ImportError:
        print("triton is not installed (pip install 'mmfast[triton]')", file=sys.stderr)
        return 2
    cases = select(collect(args.module), args.only)
    if not cases:
        print("no case matches", file=sys.stderr)
        return 2
    if args.list:
        for case in cases:
            print(describe(case))
        print(f"{len(cases)} cases x {len(args.arch)} architectures")
        return 0

    start = time.perf_counter()
    total = len(cases) * len(args.arch)
    print(
        f"compiling {len(cases)} cases for {', '.join(arch_name(a) for a in args.arch)} "
        f"({total} compiles, {args.jobs} processes)",
        flush=True,
    )

    def progress(row, done, count):
        if args.quiet and row["status"] == "ok":
            return
        usage = (
            f"{row['registers']} regs, spill {row['spill_stores']}/{row['spill_loads']} B, "
            f"{_fmt_kib(row['shared'])} KiB"
            if row["status"] != "error"
            else row["error"].splitlines()[0]
        )
        print(
            f"[{done}/{count}] {row['arch']} {row['kernel']} {row['dtype']} {row['shape']} "
            f"[{row['config']}]: {row['status']} ({usage}; {row['seconds']:.1f} s)",
            flush=True,
        )

    rows = compile_all(cases, args.arch, max(1, args.jobs), args.module, args.only, progress)
    seconds = time.perf_counter() - start
    failed = failures(rows)

    import triton

    machine, versions = _machine_and_versions()
    command = shlex.join(["python", "-m", "mmfast.triton.aot", *(argv if argv is not None else sys.argv[1:])])
    header = {
        "Date": dt.date.today().isoformat(),
        "Machine": machine,
        "Versions": f"{versions}, ptxas {_ptxas_version()} (bundled with triton {triton.__version__})",
        "Command": f"`{command.strip()}`",
        "Targets": ", ".join(
            f"{arch_name(a)} (shared memory limit {SHARED_MEMORY_LIMITS[a] // 1024} KiB per block)"
            for a in args.arch
        ),
        "Result": f"{len(rows)} compiles of {len(cases)} cases, {len(failed)} failed "
        f"({sum(r['status'] == 'error' for r in rows)} compile errors, "
        f"{sum(r['status'] == 'spill' for r in rows)} spilling, "
        f"{sum(r['status'] == 'shared memory' for r in rows)} over the shared-memory limit), "
        f"{seconds:.0f} s with {args.jobs} processes, {sum(bool(r.get('cached')) for r in rows)} "
        "of the cubins found in Triton's cache",
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "TRITON_AOT.md").write_text(markdown(rows, header), encoding="utf-8")
    report = {"header": header, "rows": [{k: v for k, v in r.items() if k != "seconds"} for r in rows]}
    (args.output_dir / "TRITON_AOT.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(header["Result"])
    print(f"wrote {args.output_dir / 'TRITON_AOT.md'} and {args.output_dir / 'TRITON_AOT.json'}")
    for row in failed:
        print(
            f"FAILED {row['arch']} {row['kernel']} {row['dtype']} {row['shape']} [{row['config']}]: "
            f"{row['status']}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
