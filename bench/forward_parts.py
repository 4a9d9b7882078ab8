"""Where concat_linear's forward time goes against "the limit" (oneDNN's fused linear on an already
concatenated input), with the inputs left unchanged between calls, as the benchmark times them,
and rewritten before every call, as in a model where an encoder has just produced them.

    python -m bench.forward_parts [--rounds 15] [--batch 64 1024] [--dtype float32 bfloat16]

Every callable is timed in interleaved rounds in one process (best round kept), so that a change
of machine load affects all alike; "rewritten" times subtract the rewrite's own time. Run it on a
quiet machine: nothing else on the cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from bench.concat_linear_cases import ACTIVATION, DTYPES, SHAPES, make_problem
from bench.report import machine_description, versions
from mmfast.ops import concat_linear, cpu_gemm

SHAPE = "768+512+128->512"


def best_times(callables: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """Best seconds per call of each callable over `rounds` interleaved rounds of `calls` calls."""
    for run in callables.values():
        for _ in range(calls):
            run()
    best = dict.fromkeys(callables, float("inf"))
    for _ in range(rounds):
        for name, run in callables.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def measure(batch: int, dtype: torch.dtype, rounds: int) -> dict[str, float]:
    """Seconds per forward of each part at one batch and dtype (see the module docstring)."""
    problem = make_problem(SHAPE, batch, dtype, requires_grad=False)
    inputs, weight, bias, concatenated = problem.inputs, problem.weight, problem.bias, problem.concatenated
    originals = [x.clone() for x in inputs]
    concatenated_original = concatenated.clone()
    gathered = torch.empty_like(concatenated)
    fused_linear = torch.ops.mkldnn._linear_pointwise.default

    def limit() -> torch.Tensor:
        return fused_linear(concatenated, weight, bias, ACTIVATION, [], "none")

    def rewrite_inputs() -> None:
        for x, original in zip(inputs, originals):
            x.copy_(original)

    def rewrite_concatenated() -> None:
        concatenated.copy_(concatenated_original)

    def mmfast() -> torch.Tensor:
        return concat_linear(inputs, weight, bias, ACTIVATION)

    def eager() -> torch.Tensor:
        return fused_linear(torch.cat(inputs, -1), weight, bias, ACTIVATION, [], "none")

    callables: dict[str, Callable[[], object]] = {
        "limit": limit,
        "mmfast": mmfast,
        "gather alone": lambda: torch.cat(inputs, -1, out=gathered),
        "rewrite inputs": rewrite_inputs,
        "rewrite concatenated": rewrite_concatenated,
        "rewritten: limit": lambda: (rewrite_concatenated(), limit()),
        "rewritten: mmfast": lambda: (rewrite_inputs(), mmfast()),
        "rewritten: eager": lambda: (rewrite_inputs(), eager()),
    }
    sizes, out_features = SHAPES[SHAPE]
    calls = max(3, int(2e8 / (batch * sum(sizes) * out_features)))
    best = best_times(callables, rounds, calls)
    for part, rewrite in (("limit", "concatenated"), ("mmfast", "inputs"), ("eager", "inputs")):
        best[f"rewritten: {part}"] -= best[f"rewrite {rewrite}"]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    if args.rounds < 1 or any(b < 1 for b in args.batch):
        parser.error("--rounds and --batch: expected positive numbers")
    print(f"concat_linear {SHAPE}, {ACTIVATION}, forward; {machine_description()}; {versions()}")
    print("times in us; ratios: the limit's time / mmfast's, eager's / mmfast's (above 1: mmfast faster)")
    for dtype_name in args.dtype:
        for batch in args.batch:
            best = measure(batch, DTYPES[dtype_name], args.rounds)
            choices = cpu_gemm.choices()
            engines = {c.engine for c in choices if c.site == "concat_linear.forward" and c.m == batch}
            times = "  ".join(f"{name} {seconds * 1e6:.1f}" for name, seconds in best.items())
            print(
                f"{dtype_name} batch {batch} (engine {', '.join(sorted(engines)) or '?'}): {times}\n"
                f"  unchanged inputs: limit / mmfast {best['limit'] / best['mmfast']:.3f}, gather alone "
                f"{best['gather alone'] / best['limit']:.3f} of the limit; rewritten inputs: limit / mmfast "
                f"{best['rewritten: limit'] / best['rewritten: mmfast']:.3f}, eager / mmfast "
                f"{best['rewritten: eager'] / best['rewritten: mmfast']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
