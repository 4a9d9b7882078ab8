"""Training and evaluation of multimodal classifiers: `Trainer`, its config, metrics and checkpoints."""

from mmfast.train.build import build_model
from mmfast.train.checkpoint import load_checkpoint, save_checkpoint
from mmfast.train.config import TrainConfig
from mmfast.train.evaluation import evaluate_checkpoint, evaluate_model
from mmfast.train.metrics import METRIC_NAMES, classification_metrics
from mmfast.train.trainer import Trainer

__all__ = [
    "METRIC_NAMES",
    "TrainConfig",
    "Trainer",
    "build_model",
    "classification_metrics",
    "evaluate_checkpoint",
    "evaluate_model",
    "load_checkpoint",
    "save_checkpoint",
]
