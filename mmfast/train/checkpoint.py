"""Checkpoints written atomically, and the random-number states they carry."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfast.train.config import TrainConfig


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes `state` to `path` through a temporary file in the same folder and a rename, so that an
    interrupted save never leaves a truncated file where the last good checkpoint was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# The keys of a checkpoint of `mmfast train` that `mmfast evaluate` reads.
MODEL_KEYS = ("config", "model")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupted, not written by ``torch.save``)
    or that does not hold what was expected of it. Its message is one line naming the file; the
    command line reports it as a usage error (exit code 2)."""

    @classmethod
    def of(cls, path: str | os.PathLike, problem: str, cause: BaseException | None = None) -> CheckpointError:
        """``checkpoint: <path>: <problem>``, and the first sentence of ``cause``'s message."""
        message = f"checkpoint: {path}: {problem}"
        return cls(f"{message} ({_summary(cause)})" if cause is not None else message)


def load_checkpoint(path: str | os.PathLike, required: Collection[str] = ()) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, onto the CPU. Only tensors and plain values are
    unpickled (``weights_only``), so a checkpoint from elsewhere cannot run code.

    Args:
        path: the checkpoint file.
        required: keys the checkpoint must have (e.g. :data:`MODEL_KEYS`).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a readable checkpoint, not a dict, or lacks a key of
            ``required``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError.of(path, "the file is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # What the file holds decides what torch.load raises: RuntimeError for a truncated zip
        # archive, KeyError or IndexError for a text file, UnpicklingError for random bytes or for
        # objects other than tensors and plain values. To the caller they all mean the same.
        raise CheckpointError.of(
            path,
            "cannot be read: truncated, corrupted or not a torch.save checkpoint of tensors and plain values",
            error,
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError.of(path, f"holds a {type(state).__name__}, not a checkpoint dict")
    missing = [key for key in required if key not in state]
    if missing:
        names = ", ".join(map(repr, missing))
        raise CheckpointError.of(path, f"not a training checkpoint of mmfast train (no {names})")
    return state


def checkpoint_config(state: dict[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The training config saved in checkpoint ``state`` (read from ``path``)."""
    try:
        return TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError.of(path, "holds no valid training config", error) from error


def _summary(error: BaseException, limit: int = 120) -> str:
    """``Type: first sentence of the message``, cut to about ``limit`` characters: torch's messages
    run to paragraphs of advice (some of it, to turn ``weights_only`` off, not ours to give)."""
    text = " ".join(str(error).split())
    sentence = text.split(". ")[0].rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[: limit - 3].rstrip() + "..."
    return f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators, as tensors and plain values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` returned."""
    random.setstate(_to_tuples(state["python"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
