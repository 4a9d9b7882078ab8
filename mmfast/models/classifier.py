"""`MultimodalClassifier`: modality encoders, a fusion, and a linear head."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mmfast.models.concat import ConcatFusion
from mmfast.models.transformer import TransformerFusion
from mmfast.models.weighted import AttentionFusionBlock, GatedFusionBlock

FUSIONS = ("concat", "gated", "attention", "transformer")


class MultimodalClassifier(nn.Module):
    """Encoders per modality, a fusion of their outputs, and a linear classification head.

    Input: a batch ``dict`` with a tensor per modality (``"<modality>_lengths"`` for padded
    sequences, as :func:`mmfast.data.collate` gives); other keys (e.g. ``"label"``) are ignored.
    Output: logits ``[B, num_classes]``.

    Modalities are processed in sorted name order. A modality missing from the batch (inference
    with a missing modality) contributes zeros to the vector fusions and no tokens to the
    transformer fusion. In training mode, ``modality_dropout`` drops each modality of each sample
    with that probability (never all of a sample's modalities) in the same way, so that the model
    learns to do without any one of them.

    Args:
        encoders: modality name -> encoder (see :class:`mmfast.encoders.ModalityEncoder`).
        fusion: ``"concat"`` (``ConcatLinear`` + ReLU), ``"gated"`` (``GatedFusion``; encoders of
            equal ``out_dim``, at least two), ``"attention"`` (``AttentionFusion``, at least two) or
            ``"transformer"`` (cross-modal transformer over the encoders' tokens).
        num_classes: number of classes.
        hidden: width of the fused representation.
        dropout: dropout before the head (and inside the transformer fusion).
        modality_dropout: train-time probability of dropping a modality, in [0, 1).
        reference: build the fusion from plain PyTorch layers (``torch.cat`` + ``nn.Linear``,
            loop-based gated / attention fusion, explicit softmax attention) with the same
            parameter names, for output-for-output comparison and timing.
        num_heads, num_layers: of the transformer fusion.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: str,
        num_classes: int,
        hidden: int = 128,
        dropout: float = 0.1,
        modality_dropout: float = 0.0,
        reference: bool = False,
        num_heads: int = 4,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
        if not encoders:
            raise ValueError("encoders: expected at least one modality encoder")
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout: expected a probability in [0, 1), got {modality_dropout}")
        self.modalities: tuple[str, ...] = tuple(sorted(encoders))
        self.fusion_kind = fusion
        self.reference = reference
        self.modality_dropout = modality_dropout
        self.num_classes = num_classes
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        dims = [int(self.encoders[m].out_dim) for m in self.modalities]
        if fusion in ("gated", "attention") and len(dims) < 2:
            raise ValueError(f"fusion={fusion!r}: needs at least two modalities, got {list(self.modalities)}")
        if fusion == "concat":
            self.fusion: nn.Module = ConcatFusion(dims, hidden, reference)
        elif fusion == "gated":
            if len(set(dims)) != 1:
                raise ValueError(
                    "fusion='gated': needs encoders with equal out_dim, got "
                    f"{dict(zip(self.modalities, dims))}"
                )
            self.fusion = GatedFusionBlock(dims[0], len(dims), reference)
        elif fusion == "attention":
            self.fusion = AttentionFusionBlock(dims, hidden, reference)
        else:
            self.fusion = TransformerFusion(
                dims, hidden, num_heads, num_layers, dropout=dropout, reference=reference
            )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.fusion.out_dim, num_classes))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for the modalities present in ``batch``."""
        present = [m for m in self.modalities if m in batch]
        if not present:
            raise ValueError(
                f"batch: expected at least one of the modalities {list(self.modalities)}, "
                f"got keys {sorted(batch)}"
            )
        reference_input = batch[present[0]]
        size = reference_input.shape[0]
        keep = self._modality_keep_mask(present, size, reference_input.device)
        if self.fusion_kind == "transformer":
            return self.head(self._fuse_tokens(batch, keep))
        encoded: dict[str, torch.Tensor] = {}
        for index, modality in enumerate(self.modalities):
            if modality not in batch:
                continue
            features = self.encoders[modality](batch[modality], batch.get(f"{modality}_lengths"))
            if features.shape[0] != size:
                raise ValueError(f"batch[{modality!r}]: expected batch size {size}, got {features.shape[0]}")
            if keep is not None:
                features = features * keep[:, index : index + 1].to(features.dtype)
            encoded[modality] = features
        like = encoded[present[0]]
        fused = self.fusion(
            [
                encoded[m] if m in encoded else like.new_zeros(size, self.encoders[m].out_dim)
                for m in self.modalities
            ]
        )
        return self.head(fused)

    def _fuse_tokens(self, batch: Mapping[str, torch.Tensor], keep: torch.Tensor | None) -> torch.Tensor:
        tokens: list[torch.Tensor | None] = []
        masks: list[torch.Tensor | None] = []
        for index, modality in enumerate(self.modalities):
            if modality not in batch:
                tokens.append(None)
                masks.append(None)
                continue
            sequence, mask = self.encoders[modality].forward_tokens(
                batch[modality], batch.get(f"{modality}_lengths")
            )
            if keep is not None:
                dropped = ~keep[:, index : index + 1]
                base = (
                    mask
                    if mask is not None
                    else torch.zeros(sequence.shape[:2], dtype=torch.bool, device=sequence.device)
                )
                mask = base | dropped
            tokens.append(sequence)
            masks.append(mask)
        return self.fusion(tokens, masks)

    def _modality_keep_mask(self, present: list[str], size: int, device: torch.device) -> torch.Tensor | None:
        """Boolean ``[B, M]``: which modalities each sample keeps (None: all, outside training)."""
        if not self.training or self.modality_dropout == 0.0 or len(present) < 2:
            return None
        available = torch.tensor([m in present for m in self.modalities], device=device)
        keep = (torch.rand(size, len(self.modalities), device=device) >= self.modality_dropout) & available
        # A sample that lost every modality gets one back, chosen uniformly among those present.
        # Computed for every sample, used where needed: no data-dependent branch, no device sync.
        empty = ~keep.any(dim=1, keepdim=True)
        choice = torch.multinomial(available.float().expand(size, -1), 1)
        rescue = torch.zeros_like(keep).scatter_(1, choice, True)
        return keep | (rescue & empty)
