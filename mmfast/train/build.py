"""The model a training config describes."""

from __future__ import annotations

from torch import nn

from mmfast.data import dataset_info
from mmfast.models import build_classifier, build_dual_encoder, build_vqa_model
from mmfast.train.config import TrainConfig


def build_model(config: TrainConfig) -> nn.Module:
    """The model ``config`` describes, its parameters drawn from the current RNG state: a
    :class:`~mmfast.models.MultimodalClassifier` for ``task="classification"``, a
    :class:`~mmfast.models.DualEncoder` for ``task="retrieval"``, a
    :class:`~mmfast.models.VQAModel` for ``task="vqa"``."""
    info = dataset_info(config.dataset, **config.dataset_options)
    if config.task == "retrieval":
        return build_dual_encoder(info, loss=config.loss, embed_dim=config.embed_dim, hidden=config.hidden)
    if config.task == "vqa":
        return build_vqa_model(
            info,
            fusion=config.fusion,
            modalities=config.modalities,
            hidden=config.hidden,
            dropout=config.dropout,
            reference=config.reference,
            text_encoder=config.text_encoder,
            **config.model_settings,
        )
    return build_classifier(
        info,
        fusion=config.fusion,
        modalities=config.modalities,
        reference=config.reference,
        hidden=config.hidden,
        dropout=config.dropout,
        modality_dropout=config.modality_dropout,
        text_encoder=config.text_encoder,
    )
