"""Training and evaluation of multimodal classifiers and image-text retrieval models: `Trainer`, its
config, metrics (classification, and recall@K / median rank over a whole gallery) and checkpoints."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmfast.train.build import build_model
    from mmfast.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from mmfast.train.config import TrainConfig
    from mmfast.train.evaluation import evaluate_checkpoint, evaluate_model
    from mmfast.train.metrics import METRIC_NAMES, classification_metrics
    from mmfast.train.retrieval import (
        RETRIEVAL_METRIC_NAMES,
        evaluate_retrieval,
        match_ranks,
        retrieval_metrics,
    )
    from mmfast.train.trainer import Trainer

# Imported on first use: the command line reads `TrainConfig`'s defaults (mmfast.train.config,
# plain dataclasses) to build its parser, and importing the trainer with it (scikit-learn, the
# models, the datasets) would make `mmfast train --help` wait a second for nothing.
_EXPORTS = {
    "METRIC_NAMES": "mmfast.train.metrics",
    "RETRIEVAL_METRIC_NAMES": "mmfast.train.retrieval",
    "CheckpointError": "mmfast.train.checkpoint",
    "TrainConfig": "mmfast.train.config",
    "Trainer": "mmfast.train.trainer",
    "build_model": "mmfast.train.build",
    "classification_metrics": "mmfast.train.metrics",
    "evaluate_checkpoint": "mmfast.train.evaluation",
    "evaluate_model": "mmfast.train.evaluation",
    "evaluate_retrieval": "mmfast.train.retrieval",
    "load_checkpoint": "mmfast.train.checkpoint",
    "match_ranks": "mmfast.train.retrieval",
    "retrieval_metrics": "mmfast.train.retrieval",
    "save_checkpoint": "mmfast.train.checkpoint",
}

__all__ = [
    "METRIC_NAMES",
    "RETRIEVAL_METRIC_NAMES",
    "CheckpointError",
    "TrainConfig",
    "Trainer",
    "build_model",
    "classification_metrics",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_retrieval",
    "load_checkpoint",
    "match_ranks",
    "retrieval_metrics",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
