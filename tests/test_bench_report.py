"""bench.report turns the benchmark's ratio rows into bench/RESULTS.md and the speed-up chart (here
from rows written by hand, so that nothing is timed)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from bench.held_memory import FIELDS as HELD_FIELDS
from bench.report import best_of_runs, read_rows, write_report

FIELDS = ["op", "mode", "dtype", "shape", "batch", "mmfast_ms", "speedup_vs_compile", "speedup_vs_eager"]
ROWS = [
    ["concat_linear", "forward", "float32", "768+512+128->512", "1024", "7.5", "1.31", "2.05"],
    ["concat_linear", "forward+backward", "float32", "768+512+128->512", "1024", "23.2", "1.10", "1.45"],
    ["concat_linear", "forward", "bfloat16", "1024+1024->1024", "1", "0.06", "2.29", "1.14"],
    ["gated_fusion", "forward", "float32", "3x256", "64", "0.4", "", "1.60"],
    ["gated_fusion", "forward", "float32", "3x256", "1024", "3.1", "1.20", "1.35"],
]


def _write_csv(path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        writer.writerows(ROWS)


def test_report_has_machine_versions_command_and_a_table_per_op(tmp_path: Path):
    _write_csv(tmp_path / "ratios.csv")
    path = write_report(read_rows(tmp_path / "ratios.csv"), tmp_path, quick=True)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "RESULTS.md"
    assert f"torch {torch.__version__}" in text and "mmfast " in text and "Python " in text
    assert "CPU cores" in text and "Date: " in text
    assert "`python -m bench.report --quick`" in text
    assert "same command on a GPU machine" in text
    assert "### concat_linear" in text and "### gated_fusion" in text
    # Eager first, then torch.compile; a missing ratio shows as "-".
    assert "| mode | dtype | shape | batch | mmfast ms | x vs_eager | x vs_compile |" in text
    assert "| forward | float32 | 768+512+128->512 | 1024 | 7.500 | 2.05 | 1.31 |" in text
    assert "| forward | float32 | 3x256 | 64 | 0.400 | 1.60 | - |" in text
    chart = tmp_path / "speedup.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![speed-ups](speedup.png)" in text


def test_report_shows_the_memory_in_a_training_graph(tmp_path: Path):
    _write_csv(tmp_path / "ratios.csv")
    with open(tmp_path / "held.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HELD_FIELDS)
        writer.writerow(
            ["concat_linear", "768+512+128->512 gelu", "relu", "float32", "1024"]
            + [15 * 2**19, 13 * 2**20, 27 * 2**20 + 2**18, 23 * 2**20 + 2**18, 11 * 2**19, 0]
        )
    text = write_report(
        read_rows(tmp_path / "ratios.csv"), tmp_path, quick=True, held_rows=read_rows(tmp_path / "held.csv")
    ).read_text(encoding="utf-8")
    assert "### Memory in a training graph" in text
    # held 7.5 vs 13 MiB (x 1.73), peak 27.25 vs 23.25 MiB (x 0.85), 5.5 MiB kept between steps.
    expected = "| concat_linear | 768+512+128->512 gelu | relu | float32 | 1024 | 7.50 | 13.00 | 1.73 |"
    assert expected + " 27.25 | 23.25 | 0.85 | 5.50 |" in text
    # Without measurements the section is left out.
    without = write_report(read_rows(tmp_path / "ratios.csv"), tmp_path, quick=True)
    assert "Memory in a training graph" not in without.read_text(encoding="utf-8")


def test_several_runs_keep_each_implementations_best_time():
    fields = ["op", "mode", "dtype", "shape", "batch", "mmfast_ms", "speedup_vs_eager", "speedup_vs_compile"]
    first = [dict(zip(fields, ["gated_fusion", "forward", "float32", "3x256", "64", "2.0", "1.5", ""]))]
    # Second run: mmfast slower, eager faster (1.2 * 2.5 = 3.0 ms against 3.0 ms), compile measured.
    second = [dict(zip(fields, ["gated_fusion", "forward", "float32", "3x256", "64", "2.5", "1.2", "2.0"]))]
    (row,) = best_of_runs([first, second])
    assert float(row["mmfast_ms"]) == 2.0
    assert abs(float(row["speedup_vs_eager"]) - 1.5) < 1e-9  # 3.0 ms / 2.0 ms
    assert abs(float(row["speedup_vs_compile"]) - 2.5) < 1e-9  # 5.0 ms / 2.0 ms
    assert row["op"] == "gated_fusion" and row["batch"] == "64"


def test_report_shows_the_peak_memory_and_the_largest_batch_within_the_budget(tmp_path: Path):
    from bench.conftest import MEMORY_FIELDS

    _write_csv(tmp_path / "ratios.csv")
    with open(tmp_path / "memory.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MEMORY_FIELDS)
        writer.writerow(["clip_loss", "D=256", "float32", "16384", "40.0", "4200.0"])
        writer.writerow(["clip_loss", "D=256", "float32", "65536", "90.5", ""])
    memory = read_rows(tmp_path / "memory.csv")
    report = write_report(read_rows(tmp_path / "ratios.csv"), tmp_path, quick=True, memory_rows=memory)
    text = report.read_text(encoding="utf-8")
    assert "### Peak memory of the contrastive losses" in text
    assert "| clip_loss | D=256 | 16384 | 40.0 | 4200.0 | 105.0 |" in text
    assert "| clip_loss | D=256 | 65536 | 90.5 | - | - |" in text
    assert "clip_loss eager 16384, clip_loss mmfast 65536" in text


def test_machine_description_names_the_isa_extensions():
    from bench.report import machine_description
    from mmfast._backend import ISA_FLAGS

    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        flags = set(next(line for line in cpuinfo if line.startswith("flags")).split(":", 1)[1].split())
    description = machine_description()
    for flag, name in ISA_FLAGS.items():
        assert (f"{name}," in description or f"{name})" in description) == (flag in flags), description


def test_forward_parts_times_each_part_and_names_the_engine(capsys):
    """bench.forward_parts (concat_linear's forward against the limit, inputs unchanged and
    rewritten per call) runs end to end at a small batch: every part timed, the ratios and the
    tuner's engine printed."""
    from bench.forward_parts import main, measure

    best = measure(2, torch.float32, rounds=1)
    assert set(best) >= {"limit", "mmfast", "gather alone", "rewritten: mmfast", "rewritten: eager"}
    assert all(seconds > 0 for name, seconds in best.items() if not name.startswith("rewritten"))
    assert main(["--rounds", "1", "--batch", "2", "--dtype", "float32"]) == 0
    printed = capsys.readouterr().out
    assert (
        "float32 batch 2 (engine " in printed and "limit / mmfast" in printed and "eager / mmfast" in printed
    )


def test_onednn_dispatch_counts_the_kernels_each_part_runs():
    from bench.onednn_dispatch import count_primitives, run

    lines = [
        "=== mmfast",
        "onednn_verbose,v1,primitive,exec,cpu,inner_product,brg_matmul:avx10_1_512_amx,forward_training,src:bf16",
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,matmul,brg_matmul:avx512_core,undef,src:f32",
        "CHOICE concat_linear.forward onednn",
        "=== limit",
        "onednn_verbose,1733,v1,primitive,exec,cpu,inner_product,brg_matmul:avx512_core,forward_training",
        "onednn_verbose,1734,v1,primitive,exec,cpu,inner_product,brg_matmul:avx512_core,forward_training",
    ]
    counts, choices = count_primitives(lines)
    assert counts == {
        ("mmfast", "inner_product", "brg_matmul:avx10_1_512_amx"): 1,
        ("limit", "inner_product", "brg_matmul:avx512_core"): 2,
    }
    assert choices == ["concat_linear.forward onednn"]

    # On this machine: the limit is oneDNN's linear in every dtype; where the CPU has AMX, its
    # bfloat16 GEMMs run AMX kernels (what a CPU without AMX runs is whatever oneDNN picks).
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        has_amx = "amx_tile" in cpuinfo.read()
    counts, choices = run("bfloat16", 16)
    limit = {implementation for (part, _, implementation) in counts if part == "limit"}
    assert limit, counts
    if has_amx:
        assert all("amx" in implementation for implementation in limit), limit
    if not os.environ.get("MMFAST_CPU_GEMM"):  # a forced engine is run untimed and unrecorded
        assert any(choice.startswith("concat_linear.forward ") for choice in choices), choices
