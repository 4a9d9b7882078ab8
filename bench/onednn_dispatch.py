"""Which oneDNN kernels run concat_linear's GEMMs on this CPU, and eager's and the limit's beside
them: whether bfloat16 really runs on AMX tiles (or AVX512-BF16) and float32 on AVX-512.

    python -m bench.onednn_dispatch [--batch 64 1024] [--dtype bfloat16 float32]

Each (dtype, batch) runs in a fresh process with ``ONEDNN_VERBOSE=1``: a few forward + backward
steps of mmfast's ``concat_linear`` (768+512+128 -> 512, GELU; the GEMM tuner decides on the first),
of eager code (``torch.cat`` + ``F.linear`` + GELU) and forwards of the limit (oneDNN's fused linear
on the concatenated input). oneDNN prints one line per primitive it executes; this counts them by
part, primitive kind and implementation (``brg_matmul:avx10_1_512_amx`` is an AMX kernel,
``brg_matmul:avx512_core_bf16`` AVX512-BF16, ``brg_matmul:avx512_core`` plain AVX-512), and prints
the engines the tuner chose. GEMMs that ATen runs through MKL (float32 ``mm`` / ``addmm``) print
nothing: a part with no line ran no oneDNN primitive.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from collections.abc import Iterable

from bench.report import machine_description

PARTS = ("mmfast", "eager", "limit")

_CHILD = """
import torch, torch.nn.functional as F
from bench.concat_linear_cases import ACTIVATION, make_problem
from mmfast.ops import concat_linear, cpu_gemm
p = make_problem("768+512+128->512", {batch}, getattr(torch, "{dtype}"), requires_grad=True)
def section(name): print("=== " + name, flush=True)
section("mmfast")
for _ in range(4):
    for t in p.leaves: t.grad = None
    concat_linear(p.inputs, p.weight, p.bias, ACTIVATION).backward(p.grad_output)
for choice in cpu_gemm.choices():
    print("CHOICE", choice.site, choice.engine, flush=True)
section("eager")
for _ in range(2):
    F.gelu(F.linear(torch.cat(p.inputs, -1), p.weight, p.bias)).backward(p.grad_output)
section("limit")
with torch.no_grad():
    for _ in range(2):
        torch.ops.mkldnn._linear_pointwise(p.concatenated, p.weight, p.bias, ACTIVATION, [], "none")
"""


def count_primitives(lines: Iterable[str]) -> tuple[dict[tuple[str, str, str], int], list[str]]:
    """From the child's output: {(part, primitive, implementation): executions} over oneDNN's
    ``exec`` lines, and the tuner's choices (``site engine``)."""
    part = "setup"
    counts: dict[tuple[str, str, str], int] = collections.Counter()
    choices = []
    for line in lines:
        if line.startswith("=== "):
            part = line[4:].strip()
        elif line.startswith("CHOICE "):
            choices.append(line[len("CHOICE ") :].strip())
        elif line.startswith("onednn_verbose,"):
            fields = line.split(",")
            if "exec" not in fields:
                continue
            at = fields.index("exec")
            # onednn_verbose,[time,]v1,primitive,exec,cpu,<kind>,<implementation>,...
            if len(fields) > at + 3:
                counts[(part, fields[at + 2], fields[at + 3])] += 1
    return dict(counts), choices


def run(dtype: str, batch: int) -> tuple[dict[tuple[str, str, str], int], list[str]]:
    """Runs one (dtype, batch) in a fresh process under ONEDNN_VERBOSE=1 and counts its primitives."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD.format(batch=batch, dtype=dtype)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode:
        raise RuntimeError(f"{dtype} batch {batch}: the child failed:\n{child.stderr[-2000:]}")
    return count_primitives(child.stdout.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    args = parser.parse_args(argv)
    print(f"Machine: {machine_description()}\n")
    print("| dtype | batch | part | oneDNN primitive | implementation | executions |")
    print("|---|---|---|---|---|---|")
    chosen = []
    for dtype in args.dtype:
        for batch in args.batch:
            counts, choices = run(dtype, batch)
            for (part, kind, implementation), n in sorted(counts.items()):
                if part in PARTS:
                    print(f"| {dtype} | {batch} | {part} | {kind} | `{implementation}` | {n} |")
            silent = [part for part in PARTS if not any(key[0] == part for key in counts)]
            for part in silent:
                print(f"| {dtype} | {batch} | {part} | none (ATen's MKL GEMMs) | | 0 |")
            chosen.append(f"{dtype} batch {batch}: " + "; ".join(choices))
    print("\nThe tuner's engines (site engine):")
    for line in chosen:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
