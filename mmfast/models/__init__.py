"""Multimodal models: `MultimodalClassifier` (encoders + fusion module + head, composed), the fusion
modules and heads built by name (`build_fusion`, `build_head`), and `build_classifier`; for
image-text retrieval, `DualEncoder` (two towers into one embedding space, a contrastive loss) and
`build_dual_encoder`; for visual question answering, `VQAModel` (image and question encoders, a
concat, gated, attention, FiLM or transformer fusion, an answer classifier) and `build_vqa_model`."""

from mmfast.models.builder import build_classifier, build_encoder
from mmfast.models.classifier import MultimodalClassifier
from mmfast.models.concat import ConcatFusion
from mmfast.models.dual_encoder import DualEncoder, ProjectionHead, SpatialProjection, build_dual_encoder
from mmfast.models.fusion import FUSIONS, build_fusion, build_head
from mmfast.models.transformer import TransformerFusion
from mmfast.models.vqa import VQA_FUSIONS, FiLMBlock, FiLMFusion, FiLMPixelCNN, VQAModel, build_vqa_model
from mmfast.models.weighted import AttentionFusionBlock, GatedFusionBlock

__all__ = [
    "FUSIONS",
    "VQA_FUSIONS",
    "AttentionFusionBlock",
    "ConcatFusion",
    "DualEncoder",
    "FiLMBlock",
    "FiLMFusion",
    "FiLMPixelCNN",
    "GatedFusionBlock",
    "MultimodalClassifier",
    "ProjectionHead",
    "SpatialProjection",
    "TransformerFusion",
    "VQAModel",
    "build_classifier",
    "build_dual_encoder",
    "build_encoder",
    "build_fusion",
    "build_head",
    "build_vqa_model",
]
