"""Multimodal models: `MultimodalClassifier` (encoders + fusion module + head, composed), the fusion
modules and heads built by name (`build_fusion`, `build_head`), and `build_classifier`."""

from mmfast.models.builder import build_classifier, build_encoder
from mmfast.models.classifier import MultimodalClassifier
from mmfast.models.concat import ConcatFusion
from mmfast.models.fusion import FUSIONS, build_fusion, build_head
from mmfast.models.transformer import TransformerFusion
from mmfast.models.weighted import AttentionFusionBlock, GatedFusionBlock

__all__ = [
    "FUSIONS",
    "AttentionFusionBlock",
    "ConcatFusion",
    "GatedFusionBlock",
    "MultimodalClassifier",
    "TransformerFusion",
    "build_classifier",
    "build_encoder",
    "build_fusion",
    "build_head",
]
