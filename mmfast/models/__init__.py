"""Multimodal models: `MultimodalClassifier` (encoders + fusion + head) and `build_classifier`."""

from mmfast.models.builder import build_classifier, build_encoder
from mmfast.models.classifier import FUSIONS, MultimodalClassifier
from mmfast.models.concat import ConcatFusion
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
]
