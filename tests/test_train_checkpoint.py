"""Checkpoints: atomic writes, RNG states that round-trip, one-line errors for files that are not."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfast.train.checkpoint import (
    CheckpointError,
    checkpoint_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mmfast.train.evaluation import evaluate_checkpoint
from mmfast.train.trainer import STATE_KEYS, Trainer
from tests._train_configs import tiny_config


def test_a_failing_save_leaves_the_previous_checkpoint_intact(tmp_path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.arange(4.0)})
    before = path.read_bytes()
    # A tensor is written before pickling reaches the lambda, so a non-atomic save would leave a
    # truncated file behind.
    with pytest.raises(Exception, match="lambda|pickle"):
        save_checkpoint(path, {"weights": torch.ones(1000), "epoch": 2, "bad": lambda: None})
    assert path.read_bytes() == before
    restored = load_checkpoint(path)
    assert restored["epoch"] == 1 and torch.equal(restored["weights"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_a_failing_rename_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr("mmfast.train.checkpoint.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_load_checkpoint_names_a_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_states_round_trip_through_a_checkpoint(tmp_path) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(1))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


def _bad_checkpoints(folder: Path) -> dict[str, Path]:
    """Files that are not checkpoints of mmfast train, by what is wrong with them."""
    save_checkpoint(folder / "good.pt", {"config": tiny_config().to_dict(), "model": {"w": torch.ones(500)}})
    data = (folder / "good.pt").read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"epoch,accuracy\n1,0.5\n",
        "random": bytes(range(256)) * 8,
    }
    for name, content in files.items():
        (folder / f"{name}.pt").write_bytes(content)
    torch.save(torch.ones(3), folder / "tensor.pt")
    torch.save({"weights": torch.ones(2)}, folder / "foreign.pt")
    return {name: folder / f"{name}.pt" for name in [*files, "tensor", "foreign"]}


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "random", "tensor", "foreign"])
def test_a_file_that_is_not_a_checkpoint_is_a_one_line_error_naming_it(tmp_path, kind) -> None:
    path = _bad_checkpoints(tmp_path)[kind]
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, required=("config", "model"))
    message = str(error.value)
    assert message.startswith(f"checkpoint: {path}: ") and "\n" not in message and len(message) < 400
    assert isinstance(error.value, ValueError)  # what the command line reports as a usage error
    if kind == "truncated":
        assert "truncated" in message and "PytorchStreamReader" in message
    if kind == "foreign":
        assert "not a training checkpoint" in message and "'config', 'model'" in message
    for load in (evaluate_checkpoint, Trainer.resume):
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            load(path)


def test_a_checkpoint_whose_contents_do_not_fit_its_config_is_an_error_naming_it(tmp_path) -> None:
    config = tiny_config().to_dict()
    save_checkpoint(tmp_path / "bad-config.pt", {"config": {**config, "colour": "red"}, "model": {}})
    with pytest.raises(CheckpointError, match="bad-config.pt: holds no valid training config"):
        checkpoint_config(load_checkpoint(tmp_path / "bad-config.pt"), tmp_path / "bad-config.pt")
    save_checkpoint(tmp_path / "other-model.pt", {"config": config, "model": {"w": torch.ones(2)}})
    with pytest.raises(CheckpointError, match="other-model.pt: its weights do not fit") as error:
        evaluate_checkpoint(tmp_path / "other-model.pt")
    assert "\n" not in str(error.value)
    save_checkpoint(tmp_path / "other-run.pt", {**{key: 0 for key in STATE_KEYS}, "config": config})
    with pytest.raises(CheckpointError, match="other-run.pt: does not fit the run"):
        Trainer.resume(tmp_path / "other-run.pt", tmp_path / "out", progress=False)
