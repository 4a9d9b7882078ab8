"""Runs the benchmarks and writes `bench/RESULTS.md` and `bench/speedup.png`.

    python -m bench.report [--quick] [--runs N] [--output-dir bench]
    python -m bench.report --gpu [--quick]   # bench/RESULTS-gpu.md: the GPU section alone

The tables are ratios of best times (baseline time / mmfast time), with the machine, the
versions, the date and the command that reproduces them. The GPU report (`--gpu`, what
`make gpu-check` writes) runs bench/test_bench_*_gpu.py (marker ``gpu``) and adds each case's peak
CUDA memory (torch.cuda.max_memory_allocated), read from pytest-benchmark's JSON.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RATIO_TICKS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100, 200, 500)


def machine_description() -> str:
    """CPU model, its ISA extensions (AVX2, AVX-512, AVX512-BF16, AMX), the build of mmfast's CPU
    kernels that ran, cores and GPU."""
    import torch

    from mmfast._backend import cpu_capability, cpu_description

    cpu = cpu_description()
    kernels = cpu_capability()
    build = f", mmfast's {kernels['active']} CPU kernels" if kernels else ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU results only)"
    return f"{cpu['model']} ({', '.join(cpu['isa']) or 'no AVX2'}{build}), {os.cpu_count()} CPU cores, {gpu}"


def versions() -> str:
    import torch

    import mmfast

    parts = [
        f"mmfast {mmfast.__version__}",
        f"torch {torch.__version__}",
        f"Python {platform.python_version()}",
    ]
    try:
        import triton

        parts.append(f"triton {triton.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def run_benchmarks(
    quick: bool,
    csv_path: Path,
    held_csv_path: Path | None = None,
    memory_csv_path: Path | None = None,
    only: str | None = None,
    gpu_json_path: Path | None = None,
) -> int:
    """Runs the benchmarks; with `gpu_json_path`, only the GPU section (bench/test_bench_*_gpu.py,
    marker ``gpu``), keeping pytest-benchmark's JSON (with each case's peak memory) there."""
    paths = [str(BENCH_DIR)] if gpu_json_path is None else [str(p) for p in gpu_bench_files()]
    command = [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-columns=min,median,iqr,rounds",
        f"--ratios-csv={csv_path}",
    ]
    if held_csv_path is not None:
        command.append(f"--held-csv={held_csv_path}")
    if memory_csv_path is not None:
        command.append(f"--memory-csv={memory_csv_path}")
    if gpu_json_path is not None:
        command += [f"--benchmark-json={gpu_json_path}", "-m", "gpu and quick" if quick else "gpu"]
    elif quick:
        command += ["-m", "quick"]
    if only:
        command += ["-k", only]
    return subprocess.run(command, check=False).returncode


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


CASE_FIELDS = ("op", "mode", "dtype", "shape", "batch")


def best_of_runs(runs: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """One row per case from several runs' ratio rows: each implementation's best time over the runs
    (a baseline's time is its ratio times mmfast's time in the same run), and the ratios of those.
    Runs a minute apart meet different disturbances, so the best of each is closer to undisturbed."""
    best: dict[tuple, dict[str, float]] = {}
    for rows in runs:
        for row in rows:
            key = tuple(row[field] for field in CASE_FIELDS)
            fused = float(row["mmfast_ms"])
            times = {"mmfast": fused}
            times |= {k: float(v) * fused for k, v in row.items() if k.startswith("speedup_vs_") and v}
            kept = best.setdefault(key, times)
            for name, value in times.items():
                kept[name] = min(kept.get(name, value), value)
    merged = []
    for key, times in best.items():
        row = dict(zip(CASE_FIELDS, key))
        row["mmfast_ms"] = f"{times['mmfast']:.6f}"
        row |= {name: f"{value / times['mmfast']:.6f}" for name, value in times.items() if name != "mmfast"}
        merged.append(row)
    return merged


def markdown_tables(rows: list[dict[str, str]]) -> str:
    by_op: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_op[row["op"]].append(row)
    out = []
    for op, op_rows in by_op.items():
        present = [k for k in op_rows[0] if k.startswith("speedup_vs_") and any(r.get(k) for r in op_rows)]
        preferred = ["speedup_vs_eager", "speedup_vs_compile"]
        baselines = [k for k in preferred if k in present] + [k for k in present if k not in preferred]
        header = ["mode", "dtype", "shape", "batch", "mmfast ms"] + [
            b.replace("speedup_", "x ") for b in baselines
        ]
        out.append(f"### {op}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for row in op_rows:
            cells = [row["mode"], row["dtype"], row["shape"], row["batch"], f"{float(row['mmfast_ms']):.3f}"]
            cells += [f"{float(row[b]):.2f}" if row.get(b) else "-" for b in baselines]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def held_memory_table(rows: list[dict[str, str]]) -> str:
    """Memory of each op in a small training graph (bench/held_memory.py): held by autograd after
    the forward, and the peak of a forward + backward step, mmfast against eager."""
    if not rows:
        return ""
    from bench.held_memory import markdown_table

    return "\n".join(
        [
            "### Memory in a training graph",
            "",
            "Each op's inputs come from an encoder's last layer (`nn.Linear`, or `nn.Linear` + ReLU), the",
            "losses' from L2-normalised `nn.Linear` outputs (`python -m bench.held_memory`). *held*: every",
            "storage autograd's saved tensors point to after the forward, encoders included, beyond the",
            "batch and the parameters. *peak*: the most CPU memory allocated during one forward + backward",
            "step (parameter gradients included) after three warm-up steps, each implementation in a fresh",
            "process; it includes what mmfast keeps between steps (*kept*: per-thread scratch buffers the",
            "size of the concatenation, reused by every fused layer). x = eager / mmfast: above 1, mmfast",
            "needs less.",
            "",
            markdown_table(rows),
            "",
        ]
    )


# The memory budget of the "largest batch" column: what a single 8 GiB machine or GPU holds.
MEMORY_BUDGET_MIB = 8 * 1024


def peak_memory_table(rows: list[dict[str, str]]) -> str:
    """Peak resident memory of one contrastive-loss step, and the largest batch each
    implementation ran within the budget."""
    if not rows:
        return ""
    out = [
        "### Peak memory of the contrastive losses",
        "",
        "Peak resident memory of one float32 forward+backward beyond the inputs and their gradients,",
        "each case in a fresh process (Linux VmHWM, reset just before the step; CPUs have no",
        "allocator peak to read). Eager is open_clip-style code that builds the B x B logits; it is",
        "not run above B = 16384, where it needs tens of GiB.",
        "",
        "| op | shape | batch | mmfast MiB | eager MiB | eager / mmfast |",
        "|---|---|---|---|---|---|",
    ]
    largest: dict[tuple[str, str], int] = {}
    for row in rows:
        cells = [row["op"], row["shape"], row["batch"]]
        fused = float(row["mmfast_mib"]) if row["mmfast_mib"] else None
        eager = float(row["eager_mib"]) if row["eager_mib"] else None
        cells += [f"{fused:.1f}" if fused is not None else "-", f"{eager:.1f}" if eager is not None else "-"]
        cells.append(f"{eager / fused:.1f}" if fused and eager else "-")
        out.append("| " + " | ".join(cells) + " |")
        for impl, value in (("mmfast", fused), ("eager", eager)):
            if value is not None and value <= MEMORY_BUDGET_MIB:
                key = (row["op"], impl)
                largest[key] = max(largest.get(key, 0), int(row["batch"]))
    out += [
        "",
        f"Largest batch measured within {MEMORY_BUDGET_MIB // 1024} GiB: "
        + ", ".join(f"{op} {impl} {batch}" for (op, impl), batch in sorted(largest.items()))
        + ".",
        "",
    ]
    return "\n".join(out)


def gpu_bench_files() -> list[Path]:
    return sorted(BENCH_DIR.glob("test_bench_*_gpu.py"))


GPU_MEMORY_IMPLS = ("mmfast", "eager", "compile")


def read_gpu_memory(json_paths: list[Path]) -> list[dict[str, str]]:
    """One row per case from pytest-benchmark JSON files: the peak CUDA memory of each
    implementation (the smallest over the runs: it is the same in each but for allocator rounding)."""
    peaks: dict[tuple, dict[str, float]] = defaultdict(dict)
    for path in json_paths:
        for bench in json.loads(path.read_text(encoding="utf-8")).get("benchmarks", []):
            info = bench.get("extra_info", {})
            if "peak_mib" not in info or "impl" not in info:
                continue
            key = tuple(str(info[field]) for field in CASE_FIELDS)
            impl, value = info["impl"], float(info["peak_mib"])
            peaks[key][impl] = min(peaks[key].get(impl, value), value)
    rows = []
    for key in sorted(peaks, key=lambda k: (k[0], k[1], k[2], k[3], int(k[4]))):
        row = dict(zip(CASE_FIELDS, key))
        row |= {f"{impl}_mib": f"{mib:.3f}" for impl, mib in peaks[key].items()}
        rows.append(row)
    return rows


def gpu_memory_table(rows: list[dict[str, str]]) -> str:
    """Peak CUDA memory of one call per case, and how much more eager and torch.compile need."""
    if not rows:
        return ""
    out = [
        "### Peak GPU memory",
        "",
        "Peak CUDA memory of one call (torch.cuda.max_memory_allocated, after warm-up) beyond what",
        "was allocated before it (inputs and parameters); outputs and gradients included, which every",
        "implementation returns alike. Ratios above 1: mmfast needs less.",
        "",
        "| op | mode | dtype | shape | batch | mmfast MiB | eager MiB | compile MiB | eager / mmfast"
        " | compile / mmfast |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        values = {
            impl: float(row[f"{impl}_mib"]) if row.get(f"{impl}_mib") else None for impl in GPU_MEMORY_IMPLS
        }
        cells = [row[field] for field in CASE_FIELDS]
        cells += [f"{v:.1f}" if v is not None else "-" for v in values.values()]
        fused = values["mmfast"]
        for baseline in ("eager", "compile"):
            other = values[baseline]
            cells.append(f"{other / fused:.2f}" if fused and other is not None else "-")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def write_gpu_report(
    rows: list[dict[str, str]],
    memory_rows: list[dict[str, str]],
    output_dir: Path,
    quick: bool,
    runs: int = 1,
    name: str = "RESULTS-gpu.md",
) -> Path:
    """bench/RESULTS-gpu.md: the GPU section's speed-ups and peak memory (no chart)."""
    import torch

    command = "python -m bench.report --gpu" + (" --quick" if quick else "")
    command += f" --runs {runs}" if runs > 1 else ""
    over = f"over {runs} runs" if runs > 1 else "in this one run"
    text = "\n".join(
        [
            "# GPU benchmark results",
            "",
            f"- Date: {dt.date.today().isoformat()}",
            f"- Machine: {machine_description()}",
            f"- Versions: {versions()}, CUDA {torch.version.cuda}",
            f"- Command: `{command}`" + (" (what `make gpu-check` runs)" if quick else ""),
            f"- Cases: bench/test_bench_*_gpu.py, marker `gpu`{' and `quick`' if quick else ''}; every",
            "  timed call waits for its kernels (torch.cuda.synchronize).",
            "- Ratios are baseline time / mmfast time, from the best (minimum) time of each case's",
            f"  rounds {over}; above 1 means mmfast is faster. `x vs_linear_on_cat` compares with a",
            "  bare cuBLAS linear + activation on an already concatenated input.",
            "",
            markdown_tables(rows),
            gpu_memory_table(memory_rows),
        ]
    )
    path = output_dir / name
    path.write_text(text, encoding="utf-8")
    return path


def plot(rows: list[dict[str, str]], path: Path) -> None:
    """One panel per (op, shape): speed-up against eager and torch.compile for each mode, dtype and
    batch, with the break-even line at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        panels[(row["op"], row["shape"])].append(row)
    series = [("speedup_vs_eager", "vs eager"), ("speedup_vs_compile", "vs torch.compile")]
    columns = min(3, len(panels))
    lines = -(-len(panels) // columns)
    widest = max(len(panel_rows) for panel_rows in panels.values())
    fig, axes = plt.subplots(
        lines, columns, figsize=(max(4.0, 0.55 * widest) * columns, 4.2 * lines), squeeze=False
    )
    width = 0.4
    for ax, ((op, shape), panel_rows) in zip(axes.flat, sorted(panels.items())):
        for index, (key, name) in enumerate(series):
            values = [float(r[key]) if r.get(key) else math.nan for r in panel_rows]
            # Bars start at break-even: up for faster, down for slower.
            ax.bar(
                [i + (index - 0.5) * width for i in range(len(panel_rows))],
                [v - 1.0 for v in values],
                width,
                bottom=1.0,
                label=name,
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        # Ratios: a log scale shows 0.5x and 2x equally far from break-even, and one outlier
        # (torch.compile's slow batch-1 path) does not flatten the rest.
        ax.set_yscale("log")
        known = [float(r[key]) for r in panel_rows for key, _ in series if r.get(key)] or [1.0]
        low, high = min(min(known), 0.9) / 1.1, max(max(known), 1.1) * 1.1
        ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(
            matplotlib.ticker.FixedLocator([t for t in RATIO_TICKS if low <= t <= high])
        )
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(panel_rows)))
        ax.set_xticklabels(
            [
                f"{r['mode'].replace('forward+backward', 'fwd+bwd')}\n{r['dtype']} b{r['batch']}"
                for r in panel_rows
            ],
            fontsize=6,
            rotation=90,
        )
        ax.set_title(f"{op}  {shape}", fontsize=9)
        ax.set_ylabel("speed-up (baseline / mmfast)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("mmfast speed-ups per shape (above 1: mmfast is faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    rows: list[dict[str, str]],
    output_dir: Path,
    quick: bool,
    held_rows: list[dict[str, str]] | None = None,
    runs: int = 1,
    memory_rows: list[dict[str, str]] | None = None,
    only: str | None = None,
    name: str = "RESULTS.md",
) -> Path:
    command = "python -m bench.report" + (" --quick" if quick else "")
    command += f" --only '{only}' --name {name}" if only else ""
    command += f" --runs {runs}" if runs > 1 else ""
    over = f"over {runs} runs" if runs > 1 else "in this one run"
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"- Date: {dt.date.today().isoformat()}",
            f"- Machine: {machine_description()}",
            f"- Versions: {versions()}",
            f"- Command: `{command}`" + ("" if only else " (or `mmfast bench --report`)"),
            "- Ratios are baseline time / mmfast time, from the best (minimum) time of each case's",
            f"  rounds {over} (disturbances on a shared machine only add time); above 1 means",
            "  mmfast is faster."
            + ("" if only else " `x vs_limit` compares with oneDNN's fused linear on an already"),
            "" if only else "  concatenated input.",
            "- GPU results are produced by the same command on a GPU machine.",
            "",
            markdown_tables(rows),
            held_memory_table(held_rows or []),
            peak_memory_table(memory_rows or []),
            "" if only else "![speed-ups](speedup.png)",
            "",
        ]
    )
    path = output_dir / name
    path.write_text(text, encoding="utf-8")
    if not only:  # the chart belongs to the whole set
        plot(rows, output_dir / "speedup.png")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the short benchmark set")
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR)
    parser.add_argument(
        "--runs", type=int, default=1, help="run the benchmarks this many times; report each case's best"
    )
    parser.add_argument("--only", default=None, help="only the cases pytest -k selects (e.g. contrastive)")
    parser.add_argument("--name", default=None, help="file name of the report in the output dir")
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU section alone, with peak memory: RESULTS-gpu.md"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs: expected at least 1, got {args.runs}")
    # Made before the benchmarks run: a missing folder must not lose their results at the end.
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.gpu:
        return main_gpu(args)
    args.name = args.name or "RESULTS.md"
    runs, status = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        held_path = Path(tmp) / "held.csv"
        memory_path = Path(tmp) / "memory.csv"
        for run in range(args.runs):
            csv_path = Path(tmp) / f"ratios{run}.csv"
            status = run_benchmarks(args.quick, csv_path, held_path, memory_path, args.only) or status
            if csv_path.exists():
                runs.append(read_rows(csv_path))
        if not runs:
            print("bench.report: the benchmarks produced no results", file=sys.stderr)
            return status or 1
        held_rows = read_rows(held_path) if held_path.exists() else []
        memory_rows = read_rows(memory_path) if memory_path.exists() else []
        path = write_report(
            best_of_runs(runs),
            args.output_dir,
            args.quick,
            held_rows,
            args.runs,
            memory_rows,
            args.only,
            args.name,
        )
    print(f"wrote {path}" + ("" if args.only else f" and {args.output_dir / 'speedup.png'}"))
    return status


def main_gpu(args: argparse.Namespace) -> int:
    if args.only:
        print("bench.report: --only does not apply to --gpu", file=sys.stderr)
        return 2
    runs, json_paths, status = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            csv_path, json_path = Path(tmp) / f"ratios{run}.csv", Path(tmp) / f"gpu{run}.json"
            status = run_benchmarks(args.quick, csv_path, gpu_json_path=json_path) or status
            if csv_path.exists():
                runs.append(read_rows(csv_path))
            if json_path.exists():
                json_paths.append(json_path)
        if not runs:
            print("bench.report: the GPU benchmarks produced no results (no CUDA device?)", file=sys.stderr)
            return status or 1
        path = write_gpu_report(
            best_of_runs(runs), read_gpu_memory(json_paths), args.output_dir, args.quick, args.runs,
            args.name or "RESULTS-gpu.md",
        )  # fmt: skip
    print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
