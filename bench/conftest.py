"""Benchmark harness: every timed case records what it is, and the session ends with tables of
ratios (fused against each baseline, measured in this one run) rather than absolute times."""

from __future__ import annotations

import csv
import math
import time
from collections import defaultdict
from collections.abc import Callable

import pytest

# Memory of each op in a training graph (bench/held_memory.py): one row per case, its FIELDS.
HELD_MEMORY: list[dict] = []
# Peak resident memory of a loss step beyond its inputs: (op, shape, dtype, batch) -> {impl: MiB}.
PEAK_MEMORY: dict[tuple, dict[str, float]] = defaultdict(dict)
MEMORY_FIELDS = ["op", "shape", "dtype", "batch", "mmfast_mib", "eager_mib"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--ratios-csv", default=None, help="also write the ratio rows to this CSV file")
    parser.addoption(
        "--held-csv", default=None, help="also write the training-graph memory rows to this CSV file"
    )
    parser.addoption("--memory-csv", default=None, help="also write the peak-memory rows to this CSV file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: the short benchmark set of `make bench-quick`")
    config.addinivalue_line("markers", "gpu: the GPU section (`make bench-gpu`), run on a CUDA device")


def time_case(
    benchmark,
    fn: Callable[[], object],
    *,
    op: str,
    impl: str,
    mode: str,
    dtype: str,
    shape: str,
    batch: int,
    budget_seconds: float = 1.0,
) -> None:
    """Times `fn` with about `budget_seconds` of rounds (at least 5) and tags the result."""
    benchmark.group = f"{op} | {mode} | {dtype} | {shape} | batch {batch}"
    benchmark.extra_info.update(op=op, impl=impl, mode=mode, dtype=dtype, shape=shape, batch=batch)
    fn()  # warm-up: first-use tuning, oneDNN primitive creation, torch.compile
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    rounds = int(min(max(budget_seconds / once, 5), 200))
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)


def _ratio_rows(config: pytest.Config) -> list[dict]:
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return []
    # The best (minimum) time of each case: on a shared machine the disturbances only ever add time,
    # and they come in bursts that a median taken at another moment does not see alike.
    best: dict[tuple, dict[str, float]] = defaultdict(dict)
    for bench in session.benchmarks:
        info = bench.extra_info
        if "impl" not in info or bench.stats is None:
            continue
        key = (info["op"], info["mode"], info["dtype"], info["shape"], info["batch"])
        best[key][info["impl"]] = bench.stats.min
    rows = []
    for key in sorted(best, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
        times = best[key]
        fused = next((times[name] for name in ("mmfast",) if name in times), None)
        if fused is None:
            continue
        row = dict(zip(("op", "mode", "dtype", "shape", "batch"), key))
        row["mmfast_ms"] = fused * 1e3
        for baseline, seconds in times.items():
            if baseline != "mmfast":
                row[f"speedup_vs_{baseline}"] = seconds / fused
        rows.append(row)
    return rows


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    rows = _ratio_rows(config)
    if rows:
        baselines = sorted({k for row in rows for k in row if k.startswith("speedup_vs_")})
        header = ["op", "mode", "dtype", "shape", "batch", "mmfast ms"] + [
            b.replace("speedup_", "x ") for b in baselines
        ]
        terminalreporter.write_sep(
            "=", "mmfast speed-up (baseline time / mmfast time, best times of this run)"
        )
        table = [header] + [
            [str(r["op"]), r["mode"], r["dtype"], r["shape"], str(r["batch"]), f"{r['mmfast_ms']:.3f}"]
            + [f"{r[b]:.2f}" if b in r else "-" for b in baselines]
            for r in rows
        ]
        _write_table(terminalreporter, table)
        terminalreporter.write_line(
            "x vs_limit < 1 means slower than the limit: 1/x is how far from it (target: within 1.05x)."
        )
        path = config.getoption("--ratios-csv")
        if path:
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(
                    handle, fieldnames=["op", "mode", "dtype", "shape", "batch", "mmfast_ms"] + baselines
                )
                writer.writeheader()
                writer.writerows(rows)
    if HELD_MEMORY:
        from bench.held_memory import FIELDS, markdown_table

        path = config.getoption("--held-csv")
        if path:
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(HELD_MEMORY)
        terminalreporter.write_sep("=", "memory in a training graph: held by autograd, peak of a step")
        terminalreporter.write_line(markdown_table(HELD_MEMORY))

    if PEAK_MEMORY:
        path = config.getoption("--memory-csv")
        if path:
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(MEMORY_FIELDS)
                for key, values in sorted(PEAK_MEMORY.items()):
                    writer.writerow([*key, values.get("mmfast", ""), values.get("eager", "")])
        terminalreporter.write_sep("=", "peak resident memory of one loss step beyond its inputs")
        table = [["op", "shape", "dtype", "batch", "mmfast MiB", "eager MiB", "eager / mmfast"]]
        for (op, shape, dtype, batch), values in sorted(PEAK_MEMORY.items()):
            fused, eager = values.get("mmfast", math.nan), values.get("eager", math.nan)
            ratio = f"{eager / fused:.1f}" if fused and not math.isnan(eager) else "-"
            table.append([op, shape, dtype, str(batch), f"{fused:.1f}", f"{eager:.1f}", ratio])
        _write_table(terminalreporter, table)


def _write_table(terminalreporter, table: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        terminalreporter.write_line("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if i == 0:
            terminalreporter.write_line("  ".join("-" * w for w in widths))
