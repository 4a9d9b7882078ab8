"""Memory of each op in a small training graph: what autograd holds after the forward, and the peak
of a whole forward + backward step, mmfast against eager.

    python -m bench.held_memory [--dtype float32 bfloat16] [--json]

What one op saves for backward says little on its own: `concat_linear` keeps its inputs where eager
frees them after the `torch.cat`, so whether fusing saves memory depends on whether something else
keeps those inputs anyway. Each case therefore builds the graph a model has: every input of the op
comes from an encoder's last layer, an ``nn.Linear`` (whose backward needs only its own input, so
its output is kept by nobody else) or an ``nn.Linear`` followed by a ReLU (whose output the ReLU's
backward keeps anyway); the contrastive losses get L2-normalised embeddings, as CLIP / SigLIP train.

- **held**: every storage autograd's saved tensors point to after the forward (through
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once, views included), other than those
  the caller holds anyway (the raw batch, the parameters): the encoders' and the op's together.
- **peak**: the most memory allocated at any moment of a forward + backward step after three
  warm-up steps (the profiler's allocation events), parameter gradients included (set to None
  before the step, as ``zero_grad()`` does) and what the warm-up left allocated (mmfast's scratch
  buffers): the figure that decides the largest batch that fits.
- **kept**: what stays allocated between steps other than the gradients.

Each implementation runs in a fresh process, so that no earlier case's scratch buffers or tuning
results count for it. The counting itself is :mod:`mmfast.train.memory`, which the demo uses too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.concat_linear_cases import ACTIVATION as CONCAT_ACTIVATION
from bench.concat_linear_cases import eager_concat_linear
from bench.concat_linear_cases import make_problem as concat_linear_problem
from bench.contrastive_memory import eager_clip, eager_siglip
from bench.fusion_cases import FUSED, REFERENCE
from bench.fusion_cases import make_problem as fusion_problem
from mmfast.ops import (
    clip_loss,
    concat_linear,
    cpu_gemm,
    film,
    film_reference,
    siglip_loss,
)
from mmfast.train.memory import saved_tensor_bytes, step_memory

IMPLEMENTATIONS = ("mmfast", "eager")
ENCODER_ENDINGS = ("linear", "relu")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Graph:
    """One case's training graph: ``forward()`` runs the encoders and the op; ``grad_output`` (None
    for a scalar loss) is what backward starts from."""

    forward: Callable[[], torch.Tensor]
    parameters: list[torch.Tensor]
    raw: list[torch.Tensor]
    grad_output: torch.Tensor | None

    @property
    def caller_holds(self) -> list[torch.Tensor]:
        held = [*self.raw, *self.parameters]
        return held if self.grad_output is None else [*held, self.grad_output]

    def step(self) -> None:
        """Forward and backward (the parameters' gradients accumulate)."""
        self.forward().backward(self.grad_output)


@dataclass(frozen=True)
class Case:
    op: str
    shape: str
    batch: int
    build: Callable[[str, str, torch.dtype, int], Graph]


def _param(*size: int, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*size) * scale).to(dtype).requires_grad_()


def _encoders(modules: list[nn.Module], ending: str, dtype: torch.dtype):
    """The encoders' last layers as one callable over the raw inputs, and their parameters."""
    modules = [m.to(dtype) for m in modules]

    def encode(raw: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = [m(x) for m, x in zip(modules, raw)]
        return [F.relu(y) for y in outputs] if ending == "relu" else outputs

    return encode, [p for m in modules for p in m.parameters()]


def _vector_fusion(op: str, shape: str) -> Callable[..., Graph]:
    """The vector ops' graphs, on the benchmark's own problems (bench/concat_linear_cases.py,
    bench/fusion_cases.py): their inputs become the raw batch the encoders read."""

    def build(impl: str, ending: str, dtype: torch.dtype, batch: int) -> Graph:
        torch.manual_seed(0)
        if op == "concat_linear":
            problem = concat_linear_problem(shape, batch, dtype, requires_grad=True)
            inputs, parameters = problem.inputs, [problem.weight, problem.bias]

            def fuse(features):
                if impl == "mmfast":
                    return concat_linear(features, problem.weight, problem.bias, CONCAT_ACTIVATION)
                return eager_concat_linear(features, problem.weight, problem.bias)
        else:
            problem = fusion_problem(op, shape, batch, dtype, requires_grad=True)
            inputs = problem.args[0]
            parameters = problem.leaves[len(inputs):]
            op_fn = (FUSED if impl == "mmfast" else REFERENCE)[op]

            def fuse(features):
                return op_fn(features, *problem.args[1:])

        raw = [x.detach() for x in inputs]
        widths = [x.shape[-1] for x in raw]
        encode, encoder_parameters = _encoders([nn.Linear(d, d) for d in widths], ending, dtype)
        return Graph(lambda: fuse(encode(raw)), [*encoder_parameters, *parameters], raw, problem.grad_output)

    return build


def _film_graph(channels: int, size: int, cond_dim: int) -> Callable[..., Graph]:
    def build(impl: str, ending: str, dtype: torch.dtype, batch: int) -> Graph:
        torch.manual_seed(0)
        # The feature map from a 1x1 convolution (a linear layer over channels), the condition from a
        # linear layer: the last layers of the image and the question encoders.
        encode, parameters = _encoders(
            [nn.Conv2d(channels, channels, 1), nn.Linear(cond_dim, cond_dim)], ending, dtype
        )
        raw = [torch.randn(batch, channels, size, size).to(dtype), torch.randn(batch, cond_dim).to(dtype)]
        weight = _param(2 * channels, cond_dim, dtype=dtype, scale=cond_dim**-0.5)
        bias = _param(2 * channels, dtype=dtype)
        fn = film if impl == "mmfast" else film_reference

        def forward():
            features, condition = encode(raw)
            return fn(features, condition, weight, bias)

        grad_output = torch.randn(batch, channels, size, size).to(dtype)
        return Graph(forward, [*parameters, weight, bias], raw, grad_output)

    return build


def _contrastive_graph(loss: str, dim: int) -> Callable[..., Graph]:
    def build(impl: str, ending: str, dtype: torch.dtype, batch: int) -> Graph:
        torch.manual_seed(0)
        encode, parameters = _encoders([nn.Linear(dim, dim), nn.Linear(dim, dim)], ending, dtype)
        raw = [torch.randn(batch, dim).to(dtype), torch.randn(batch, dim).to(dtype)]
        scale = torch.tensor(14.0, requires_grad=True)
        bias = torch.tensor(-10.0, requires_grad=True)
        if loss == "clip_loss":
            fn = clip_loss if impl == "mmfast" else eager_clip
        else:
            fn = siglip_loss if impl == "mmfast" else eager_siglip

        def forward():
            image, text = (F.normalize(e, dim=-1) for e in encode(raw))
            return fn(image, text, scale) if loss == "clip_loss" else fn(image, text, scale, bias)

        return Graph(forward, [*parameters, scale, bias], raw, None)

    return build


CONCAT_SHAPE = "768+512+128->512"
CASES: tuple[Case, ...] = (
    Case("concat_linear", "768+512+128->512 gelu", 1024, _vector_fusion("concat_linear", CONCAT_SHAPE)),
    Case("gated_fusion", "2x512", 1024, _vector_fusion("gated_fusion", "2x512")),
    Case(
        "attention_fusion", "768+512+128->256", 1024, _vector_fusion("attention_fusion", "768+512+128->256")
    ),
    Case("film", "64x8x8, condition 128", 1024, _film_graph(64, 8, 128)),
    Case("clip_loss", "D=256", 4096, _contrastive_graph("clip_loss", 256)),
    Case("siglip_loss", "D=256", 4096, _contrastive_graph("siglip_loss", 256)),
)
CASE_BY_OP = {case.op: case for case in CASES}
FIELDS = [
    "op", "shape", "encoder", "dtype", "batch",
    "mmfast_held", "eager_held", "mmfast_peak", "eager_peak", "mmfast_kept", "eager_kept",
    "mmfast_scratch", "eager_scratch",
]


def measure_here(op: str, ending: str, dtype: str, impl: str) -> dict[str, int]:
    """``held``, ``peak`` and ``kept`` bytes of one implementation, in this process: meaningful only
    in a fresh one, where no earlier case left scratch buffers or tuning results behind."""
    case = CASE_BY_OP[op]
    graph = case.build(impl, ending, DTYPES[dtype], case.batch)
    figures = step_memory(graph.step, graph.parameters)
    held, out = saved_tensor_bytes(graph.forward, graph.caller_holds)
    del out
    return {"held": held, **figures, "scratch": cpu_gemm.scratch_bytes()}


def measure(case: Case, ending: str, dtype: str) -> dict[str, object]:
    """One row: held, peak and kept bytes of mmfast and of eager in `case`'s graph, each measured in
    a fresh process (``python -m bench.held_memory --single OP ENDING DTYPE IMPL``)."""
    row: dict[str, object] = {
        "op": case.op, "shape": case.shape, "encoder": ending, "dtype": dtype, "batch": case.batch
    }
    for impl in IMPLEMENTATIONS:
        command = [sys.executable, "-m", "bench.held_memory", "--single", case.op, ending, dtype, impl]
        done = subprocess.run(command, capture_output=True, text=True, cwd=_REPO, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        row |= {f"{impl}_{name}": value for name, value in figures.items()}
    return row


_REPO = Path(__file__).resolve().parent.parent


def rows(dtypes: list[str] | None = None, ops: list[str] | None = None) -> Iterator[dict[str, object]]:
    for case in CASES:
        if ops and case.op not in ops:
            continue
        for dtype in dtypes or list(DTYPES):
            for ending in ENCODER_ENDINGS:
                yield measure(case, ending, dtype)


def markdown_table(table_rows: list[dict]) -> str:
    """The report's table: MiB held and peak of each, and eager / mmfast (above 1: mmfast needs less)."""
    out = [
        "| op | shape | encoder ends in | dtype | batch | held mmfast MiB | held eager MiB | x held "
        "| peak mmfast MiB | peak eager MiB | x peak | kept mmfast MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table_rows:
        cells = [str(row[k]) for k in FIELDS[:5]]
        for kind in ("held", "peak"):
            fused, eager = int(row[f"mmfast_{kind}"]) / 2**20, int(row[f"eager_{kind}"]) / 2**20
            cells += [f"{fused:.2f}", f"{eager:.2f}", f"{eager / fused:.2f}" if fused else "-"]
        cells.append(f"{int(row['mmfast_kept']) / 2**20:.2f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--op", nargs="+", choices=list(CASE_BY_OP), default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")
    parser.add_argument(
        "--single", nargs=4, metavar=("OP", "ENDING", "DTYPE", "IMPL"),
        help="measure one implementation in this process and print its figures as JSON",
    )
    args = parser.parse_args(argv)
    if args.single:
        op, ending, dtype, impl = args.single
        known = (op in CASE_BY_OP, ending in ENCODER_ENDINGS, dtype in DTYPES, impl in IMPLEMENTATIONS)
        if not all(known):
            parser.error(
                f"--single: expected OP in {list(CASE_BY_OP)}, ENDING in {list(ENCODER_ENDINGS)}, "
                f"DTYPE in {list(DTYPES)}, IMPL in {list(IMPLEMENTATIONS)}; got {args.single}"
            )
        print(json.dumps(measure_here(op, ending, dtype, impl)))
        return 0
    measured = []
    for row in rows(args.dtype, args.op):
        measured.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print(markdown_table(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
