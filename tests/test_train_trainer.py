"""Trainer: resume equals an uninterrupted run, early stopping, records, step timing, autocast."""

from __future__ import annotations

import json

import pytest
import torch

from mmfast.train.checkpoint import load_checkpoint, save_checkpoint
from mmfast.train.evaluation import evaluate_checkpoint
from mmfast.train.metrics import METRIC_NAMES
from mmfast.train.records import read_jsonl
from mmfast.train.trainer import STATE_KEYS, Trainer
from tests._train_configs import tiny_config


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path) -> None:
    # Dropout and modality dropout draw from the global RNG, the loader from its own generator:
    # all of it must come back from the checkpoint for the runs to agree bit for bit.
    config = tiny_config(dropout=0.2, modality_dropout=0.3, epochs=3, warmup_ratio=0.3)
    whole = Trainer(config, tmp_path / "whole", progress=False)
    whole_result = whole.fit()

    first = Trainer(config, tmp_path / "split", progress=False)
    assert first.fit(max_epochs=1) == {}
    assert first.epoch == 1
    # Whatever happens in between (another run, other seeds) must not matter.
    torch.manual_seed(1234)
    resumed = Trainer.resume(tmp_path / "split" / "last.pt", progress=False)
    assert resumed.epoch == 1
    resumed_result = resumed.fit()

    for name, value in _weights(whole).items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert resumed.optimizer.state_dict()["state"].keys() == whole.optimizer.state_dict()["state"].keys()
    last_whole = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    last_resumed = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    # Resume requires exactly what a checkpoint holds.
    assert set(load_checkpoint(tmp_path / "split" / "last.pt")) == set(STATE_KEYS)
    assert all(torch.equal(last_whole[k], last_resumed[k]) for k in last_whole)
    assert resumed_result["test"]["accuracy"] == whole_result["test"]["accuracy"]
    assert [r["train_loss"] for r in read_jsonl(tmp_path / "split" / "log.jsonl")] == [
        r["train_loss"] for r in whole.history
    ]


def test_resume_without_the_rng_states_diverges(tmp_path) -> None:
    # The equality above is not vacuous: dropping the saved RNG states changes the result.
    config = tiny_config(dropout=0.2, modality_dropout=0.3, epochs=2)
    whole = Trainer(config, tmp_path / "whole", progress=False)
    whole.fit()
    first = Trainer(config, tmp_path / "split", progress=False)
    first.fit(max_epochs=1)
    state = load_checkpoint(tmp_path / "split" / "last.pt")
    resumed = Trainer(config, tmp_path / "split", progress=False)
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    resumed.fit()
    assert any(not torch.equal(resumed.model.state_dict()[k], v) for k, v in _weights(whole).items())


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, monkeypatch) -> None:
    trainer = Trainer(tiny_config(epochs=8, patience=2), tmp_path, progress=False)
    scripted = iter([0.5, 0.7, 0.7, 0.6, 0.9, 0.9])
    evaluate = trainer.evaluate

    def scripted_evaluate(split: str = "val"):
        metrics = evaluate(split)
        if split == "val":
            metrics["accuracy"] = next(scripted)
        return metrics

    monkeypatch.setattr(trainer, "evaluate", scripted_evaluate)
    result = trainer.fit()
    # Best at epoch 2; epochs 3 and 4 do not improve on it: stop after 4 of 8.
    assert result["epochs_trained"] == 4
    assert result["best_val_accuracy"] == 0.7
    assert [r["epoch"] for r in read_jsonl(tmp_path / "log.jsonl")] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4


def test_run_writes_metrics_log_plot_and_checkpoints(tmp_path) -> None:
    trainer = Trainer(tiny_config(epochs=2), tmp_path, progress=False)
    result = trainer.fit()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(METRIC_NAMES) <= set(metrics["test"])
    assert metrics["test"]["accuracy"] == result["test"]["accuracy"]
    assert len(metrics["test"]["confusion_matrix"]) == 3
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == len(trainer.splits["test"])
    records = read_jsonl(tmp_path / "log.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["train_loss"] > 0 and 0 <= r["val_accuracy"] <= 1 for r in records)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "loader_rng", "config"} <= set(checkpoint)
    assert set(checkpoint["rng"]) >= {"python", "numpy", "torch"}
    assert checkpoint["config"]["epochs"] == 2
    # The schedule went through warm-up and ended its cosine at zero.
    assert checkpoint["scheduler"]["last_epoch"] == 2 * trainer.steps_per_epoch
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    # The best checkpoint holds the weights the test metrics were computed with.
    again = evaluate_checkpoint(tmp_path / "best.pt", "test")
    assert again["accuracy"] == metrics["test"]["accuracy"]
    assert again["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)


def test_evaluate_checkpoint_refuses_a_file_that_is_not_a_training_checkpoint(tmp_path) -> None:
    save_checkpoint(tmp_path / "weights.pt", {"weights": torch.ones(2)})
    with pytest.raises(ValueError, match="not a training checkpoint"):
        evaluate_checkpoint(tmp_path / "weights.pt")


def test_seconds_per_step_leaves_out_the_warm_up_steps() -> None:
    trainer = Trainer(tiny_config(epochs=1), progress=False)
    trainer.step_seconds = [10.0] * 5 + [1.0, 3.0]
    assert trainer.seconds_per_step == 2.0
    trainer.step_seconds = [4.0, 2.0]  # too short a run to leave anything out
    assert trainer.seconds_per_step == 3.0


def test_bf16_autocast_trains_with_finite_loss() -> None:
    trainer = Trainer(tiny_config(epochs=1, autocast="bf16"), progress=False)
    result = trainer.fit()
    assert torch.isfinite(torch.tensor(trainer.history[0]["train_loss"]))
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
