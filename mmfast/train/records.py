"""The run's records: a JSON-lines log of metrics and a PNG plot of the curves."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Appends one record (NaN written as null) as a line of JSON."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(_plain(record), sort_keys=True) + "\n")


def write_json(path: str | os.PathLike, value: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(_plain(value), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def plot_curves(records: list[dict[str, Any]], path: str | os.PathLike, metric: str = "accuracy") -> None:
    """Training loss, validation loss and the validation ``metric`` (the record's ``val_<metric>``,
    e.g. accuracy or a retrieval run's mean recall@1) per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train")
    loss_axis.plot(epochs, [r["val_loss"] for r in records], marker="o", label="validation")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("cross-entropy" if metric == "accuracy" else "loss")
    loss_axis.legend()
    accuracy_axis.plot(epochs, [r[f"val_{metric}"] for r in records], marker="o", color="tab:green")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_ylabel(f"validation {metric.replace('_', ' ')}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
