"""The mmfast command line: help, one-line argument errors, train / evaluate / info / bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmfast.cli import main
from mmfast.cli.parser import build_parser
from mmfast.cli.train import config_from_args
from mmfast.train.checkpoint import load_checkpoint
from mmfast.train.config import TrainConfig, config_defaults
from mmfast.train.metrics import METRIC_NAMES
from mmfast.train.records import read_jsonl

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = [
    "train", "--dataset", "synthetic", "--num-samples", "120", "--num-classes", "3", "--image-size", "8",
    "--n-mels", "8", "--hidden", "16", "--batch-size", "16", "--epochs", "1", "--no-progress",
]  # fmt: skip


def _mmfast(*args: str, **variables: str) -> subprocess.CompletedProcess:
    """``python -m mmfast ARGS`` in a subprocess, with extra environment `variables`."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **variables}
    return subprocess.run(
        [sys.executable, "-m", "mmfast", *args], capture_output=True, text=True, env=environment, timeout=120
    )


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["demo"], ["bench"], ["info"]])
def test_help_everywhere(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: mmfast" in capsys.readouterr().out


def test_python_dash_m_mmfast_help() -> None:
    completed = _mmfast("--help")
    assert completed.returncode == 0
    assert all(command in completed.stdout for command in ("train", "evaluate", "demo", "bench", "info"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--fusion", "sum"], "--fusion"),
        # Valid for argparse, refused by the dataset: the library's ValueError, on one line.
        (["train", "--dataset", "av-digits", "--difficulty", "0.3"], "difficulty"),
        (["frobnicate"], "COMMAND"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(args, expected) -> None:
    completed = _mmfast(*args)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("mmfast") and "error:" in lines[0] and expected in lines[0]
    assert "Traceback" not in completed.stderr + completed.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--modalities", "smell", "--dataset", "synthetic", "--num-samples", "30"], "modalities"),
        (["train", "--lr", "-1"], "lr"),
        (["evaluate", "missing.pt"], "no file"),
    ],
)
def test_library_errors_are_one_line_with_exit_code_2(args, expected, capsys, tmp_path) -> None:
    assert main([*args, *(["--out", str(tmp_path)] if args[0] == "train" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mmfast {args[0]}: error:") and expected in err[0]


def test_resume_without_a_checkpoint_is_an_error(capsys, tmp_path) -> None:
    assert main(["train", "--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_train_writes_metrics_and_evaluate_reads_the_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    completed = _mmfast(*TINY_TRAIN, "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_NAMES) <= set(metrics["test"])
    assert all(isinstance(metrics["test"][name], float) for name in METRIC_NAMES)
    assert {"last.pt", "best.pt", "log.jsonl", "curves.png"} <= {p.name for p in out.iterdir()}
    assert "accuracy" in completed.stdout

    assert main(["evaluate", str(out / "best.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == metrics["test"]["accuracy"]


def test_two_runs_of_a_seed_agree_bit_for_bit_with_the_aten_engine(tmp_path) -> None:
    """The README's recipe for a reproducible run: with MMFAST_CPU_GEMM=aten (no timed engine
    choice) two processes training the same seed end with the same weights and losses."""
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        args = [*TINY_TRAIN, "--epochs", "2", "--seed", "3", "--out", str(out)]
        completed = _mmfast(*args, MMFAST_CPU_GEMM="aten")
        assert completed.returncode == 0, completed.stderr
        runs.append(out)
    first, second = (load_checkpoint(out / "last.pt")["model"] for out in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    losses = [[record["train_loss"] for record in read_jsonl(out / "log.jsonl")] for out in runs]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_info_lists_versions_build_and_backends(capsys) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"mmfast", "torch", "triton"} <= set(info["versions"])
    assert "extension_loaded" in info["build"]
    assert {"cpu", "cuda"} <= set(info["backends"]["concat_linear"])
    assert main(["info"]) == 0
    assert "concat_linear" in capsys.readouterr().out


def test_bench_outside_a_source_checkout_is_a_one_line_error(monkeypatch, capsys) -> None:
    monkeypatch.setattr("mmfast.cli.bench.find_bench_dir", lambda: None)
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "source checkout" in err[0]


def test_bench_finds_the_source_tree_benchmarks() -> None:
    from mmfast.cli.bench import find_bench_dir

    assert find_bench_dir() == REPO / "bench"


def test_train_defaults_are_the_config_defaults(monkeypatch, capsys) -> None:
    # Every TrainConfig field but dataset_options has an option, defaulting to the field's default.
    assert config_from_args(build_parser().parse_args(["train"])) == TrainConfig()
    # Read from the config, not written again: another default there is another default here.
    monkeypatch.setattr("mmfast.cli.parser.config_defaults", lambda: {**config_defaults(), "lr": 0.25})
    assert build_parser().parse_args(["train"]).lr == 0.25
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: 0.25)" in capsys.readouterr().out


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mmfast {command}: error: checkpoint: "), err
    return err[0]


@pytest.mark.parametrize("kind", ["truncated", "foreign"])
def test_a_bad_checkpoint_is_a_one_line_error_naming_the_file(kind, tmp_path, capsys) -> None:
    path = tmp_path / "last.pt"
    if kind == "truncated":
        torch.save({"model": {"w": torch.ones(1000)}, "config": {}}, path)
        path.write_bytes(path.read_bytes()[:-200])
    else:
        path.write_text("not a checkpoint\n", encoding="utf-8")
    assert main(["evaluate", str(path)]) == 2
    assert str(path) in _one_line_error(capsys, "evaluate")
    assert main(["train", "--resume", "--out", str(tmp_path), "--no-progress"]) == 2
    assert str(path) in _one_line_error(capsys, "train")
    torch.save({"weights": torch.ones(2)}, path)  # a torch.save file, but not of mmfast train
    assert main(["train", "--resume", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "not a training checkpoint" in _one_line_error(capsys, "train")
