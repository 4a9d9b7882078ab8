"""Training and evaluation of multimodal classifiers: `Trainer`, its config, metrics and checkpoints."""

from mmfast.train.checkpoint import load_checkpoint, save_checkpoint
from mmfast.train.config import TrainConfig
from mmfast.train.metrics import METRIC_NAMES, classification_metrics
from mmfast.train.trainer import Trainer, build_model

__all__ = [
    "METRIC_NAMES",
    "TrainConfig",
    "Trainer",
    "build_model",
    "classification_metrics",
    "load_checkpoint",
    "save_checkpoint",
]
