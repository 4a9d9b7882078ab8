"""Checkpoints: atomic writes, RNG states that round-trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mmfast.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


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
