"""The classifier a training config describes."""

from __future__ import annotations

from mmfast.data import dataset_info
from mmfast.models import MultimodalClassifier, build_classifier
from mmfast.train.config import TrainConfig


def build_model(config: TrainConfig) -> MultimodalClassifier:
    """The classifier ``config`` describes, its parameters drawn from the current RNG state."""
    info = dataset_info(config.dataset, **config.dataset_options)
    return build_classifier(
        info,
        fusion=config.fusion,
        modalities=config.modalities,
        reference=config.reference,
        hidden=config.hidden,
        dropout=config.dropout,
        modality_dropout=config.modality_dropout,
    )
