"""Drop-in layers built on mmfast's fused ops."""

from mmfast.nn.attention_fusion import AttentionFusion
from mmfast.nn.concat_linear import ConcatLinear
from mmfast.nn.contrastive import ContrastiveLoss
from mmfast.nn.film import FiLM
from mmfast.nn.gated_fusion import GatedFusion

__all__ = ["AttentionFusion", "ConcatLinear", "ContrastiveLoss", "FiLM", "GatedFusion"]
