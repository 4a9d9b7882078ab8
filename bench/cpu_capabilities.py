"""mmfast's CPU kernels on each build this CPU runs (AVX2, AVX-512: csrc/engine/cpu_capability.h),
the quick benchmark set's mmfast cases timed under each, in alternating rounds (a fresh process per
round and build, MMFAST_CPU_CAPABILITY forcing the build), the best time per case kept.

    python -m bench.cpu_capabilities [--rounds 3] [--only gated_fusion] [--name RESULTS-cpu-capabilities.md]

Writes bench/<name> (a table: each case's best time per build and the AVX-512 build's speedup).
Run it on a quiet machine: nothing else on the cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import BENCH_DIR, machine_description, versions


def supported_builds() -> tuple[str, ...]:
    from mmfast import _backend

    info = _backend.cpu_capability()
    if info is None:
        raise SystemExit(f"the compiled extension is not loaded: {_backend.load_error()}")
    return tuple(info["supported"])


def run_round(build: str, only: str | None, json_path: Path) -> None:
    selection = "mmfast" if not only else f"mmfast and {only}"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCH_DIR),
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "quick",
        "-k",
        selection,
        f"--benchmark-json={json_path}",
    ]
    environment = {**os.environ, "MMFAST_CPU_CAPABILITY": build.lower()}
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)


def best_times(json_path: Path) -> dict[str, float]:
    data = json.loads(json_path.read_text())
    return {bench["name"]: bench["stats"]["min"] for bench in data["benchmarks"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per build (default 3)")
    parser.add_argument("--only", help="a pytest -k expression to narrow the cases")
    parser.add_argument(
        "--name", default="RESULTS-cpu-capabilities.md", help="the report's file name in bench/"
    )
    args = parser.parse_args(argv)
    builds = supported_builds()
    if len(builds) < 2:
        print(f"this CPU runs one build of the kernels ({', '.join(builds)}): nothing to compare")
        return 0
    best: dict[str, dict[str, float]] = {build: {} for build in builds}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(args.rounds):
            for build in builds if round_index % 2 == 0 else reversed(builds):
                path = Path(folder) / f"{build}-{round_index}.json"
                print(f"round {round_index + 1}/{args.rounds}: {build} build", flush=True)
                run_round(build, args.only, path)
                for case, seconds in best_times(path).items():
                    best[build][case] = min(seconds, best[build].get(case, float("inf")))
    low, high = builds[0], builds[-1]
    cases = sorted(set(best[low]) & set(best[high]))
    lines = [
        f"# mmfast's CPU kernels: the {high} build against the {low} build",
        "",
        f"- Machine: {machine_description()}",
        f"- Versions: {versions()}",
        f"- Date: {dt.date.today().isoformat()}",
        f"- Command: `python -m bench.cpu_capabilities --rounds {args.rounds}"
        + (f" --only '{args.only}'" if args.only else "")
        + "` (the quick set's mmfast cases; each build in a fresh process per round, rounds alternating,"
        " best time per case)",
        "",
        f"| case | {low} (us) | {high} (us) | {high} speedup |",
        "|---|---:|---:|---:|",
    ]
    for case in cases:
        a, b = best[low][case], best[high][case]
        lines.append(f"| `{case}` | {a * 1e6:.1f} | {b * 1e6:.1f} | {a / b:.2f}x |")
    speedups = [best[low][c] / best[high][c] for c in cases]
    if speedups:
        lines += [
            "",
            f"{len(cases)} cases; {high} speedup: min {min(speedups):.2f}x, max {max(speedups):.2f}x.",
        ]
    report = "\n".join(lines) + "\n"
    (BENCH_DIR / args.name).write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
