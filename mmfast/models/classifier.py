"""`MultimodalClassifier`: modality encoders, a fusion module and a head, composed."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mmfast.models.fusion import FUSIONS, build_fusion, build_head

__all__ = ["FUSIONS", "MultimodalClassifier"]

# The options of the deprecated string form, in the old constructor's positional order after
# `(encoders, fusion)`; `MultimodalClassifier.from_names` takes the same.
_NAMED_OPTIONS = (
    "num_classes",
    "hidden",
    "dropout",
    "modality_dropout",
    "reference",
    "num_heads",
    "num_layers",
)


class MultimodalClassifier(nn.Module):
    """Encoders per modality, a fusion of their outputs and a head, like torchmultimodal's
    ``LateFusion(encoders, fusion_module, head_module)``.

    Input: a batch ``dict`` with a tensor per modality (``"<modality>_lengths"`` for padded
    sequences, as :func:`mmfast.data.collate` gives); other keys (e.g. ``"label"``) are ignored.
    Output: ``head(fusion(features))``, e.g. logits ``[B, num_classes]``.

    Modalities are processed in sorted name order: the fusion receives a list with one
    ``[B, out_dim]`` tensor per modality (``encoder(x, lengths)``) in that order. A fusion module
    that declares ``consumes_tokens = True`` (:class:`~mmfast.models.TransformerFusion`) receives
    instead ``(tokens, padding_masks)``, two such lists of ``encoder.forward_tokens(x, lengths)``.

    A modality missing from the batch (inference with a missing modality) contributes zeros
    (``[B, encoder.out_dim]``) to a vector fusion and no tokens (``None``) to a token fusion. In
    training mode, ``modality_dropout`` drops each modality of each sample with that probability
    (never all of a sample's modalities) in the same way, so that the model learns to do without
    any one of them.

    Args:
        encoders: modality name -> encoder (see :class:`mmfast.encoders.ModalityEncoder`).
        fusion: the fusion module (see :func:`mmfast.models.build_fusion` for the built-in ones).
        head: the module applied to the fused representation (see :func:`mmfast.models.build_head`).
        modality_dropout: train-time probability of dropping a modality, in [0, 1).
        deprecated_args, deprecated_options: only with a fusion name (the deprecated form below):
            the old constructor's arguments after ``num_classes`` (``head``'s place), in its order
            ``hidden, dropout, modality_dropout, reference, num_heads, num_layers``, or by name.

    The string form of earlier releases, ``MultimodalClassifier(encoders, "concat", num_classes,
    hidden=..., dropout=..., reference=..., ...)``, still builds the fusion and head by name, with a
    ``DeprecationWarning``; use :meth:`from_names` (or :func:`mmfast.models.build_classifier`).

    Example:
        >>> fusion = build_fusion("attention", {"audio": 128, "image": 128}, hidden=128)
        >>> model = MultimodalClassifier(encoders, fusion, build_head(fusion.out_dim, 10))
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module | str,
        head: nn.Module | int | None = None,
        *deprecated_args: Any,
        modality_dropout: float = 0.0,
        **deprecated_options: Any,
    ) -> None:
        super().__init__()
        if isinstance(fusion, str):
            warnings.warn(
                "MultimodalClassifier(encoders, fusion: str, num_classes, ...) is deprecated; pass the "
                "fusion and head modules (mmfast.models.build_fusion, build_head) or use "
                "MultimodalClassifier.from_names",
                DeprecationWarning,
                stacklevel=2,
            )
            options = _named_options(head, deprecated_args, deprecated_options, modality_dropout)
            modality_dropout = options.pop("modality_dropout")
            fusion, head = _fusion_and_head(encoders, fusion, **options)
        elif deprecated_args or deprecated_options:
            unexpected = [*map(repr, deprecated_args), *deprecated_options]
            raise TypeError(
                "MultimodalClassifier: with a fusion module, expected (encoders, fusion, head, "
                f"modality_dropout=...), got also {', '.join(unexpected)}"
            )
        if not encoders:
            raise ValueError("encoders: expected at least one modality encoder")
        if not isinstance(fusion, nn.Module):
            raise TypeError(f"fusion: expected an nn.Module (or a fusion name), got {type(fusion).__name__}")
        if not isinstance(head, nn.Module):
            raise TypeError(f"head: expected an nn.Module, got {type(head).__name__}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout: expected a probability in [0, 1), got {modality_dropout}")
        self.modalities: tuple[str, ...] = tuple(sorted(encoders))
        self.modality_dropout = modality_dropout
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.fusion = fusion
        self.head = head

    @classmethod
    def from_names(
        cls,
        encoders: Mapping[str, nn.Module],
        fusion: str,
        num_classes: int,
        *,
        hidden: int = 128,
        dropout: float = 0.1,
        modality_dropout: float = 0.0,
        reference: bool = False,
        num_heads: int = 4,
        num_layers: int = 1,
    ) -> MultimodalClassifier:
        """A classifier whose fusion is built by name (:func:`~mmfast.models.build_fusion` over the
        encoders' ``out_dim``) and whose head is ``dropout`` + ``nn.Linear(fusion.out_dim,
        num_classes)`` (:func:`~mmfast.models.build_head`).

        Args:
            encoders: modality name -> encoder with an ``out_dim``.
            fusion: ``"concat"``, ``"gated"`` (encoders of equal ``out_dim``, at least two),
                ``"attention"`` (at least two) or ``"transformer"``.
            num_classes: number of classes (at least 2).
            hidden: width of the fused representation.
            dropout: dropout before the head (and inside the transformer fusion).
            modality_dropout: train-time probability of dropping a modality, in [0, 1).
            reference: build the fusion from the plain-PyTorch twins of :mod:`mmfast.nn.reference`,
                with the same parameter names, for output-for-output comparison and timing.
            num_heads, num_layers: of the transformer fusion.
        """
        fusion_module, head = _fusion_and_head(
            encoders,
            fusion,
            num_classes=num_classes,
            hidden=hidden,
            dropout=dropout,
            reference=reference,
            num_heads=num_heads,
            num_layers=num_layers,
        )
        return cls(encoders, fusion_module, head, modality_dropout=modality_dropout)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``head(fusion(...))`` of the modalities present in ``batch`` (with the head of
        :func:`~mmfast.models.build_head`, logits ``[B, num_classes]``)."""
        present = [m for m in self.modalities if m in batch]
        if not present:
            raise ValueError(
                f"batch: expected at least one of the modalities {list(self.modalities)}, "
                f"got keys {sorted(batch)}"
            )
        reference_input = batch[present[0]]
        size = reference_input.shape[0]
        keep = self._modality_keep_mask(present, size, reference_input.device)
        if getattr(self.fusion, "consumes_tokens", False):
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


def _fusion_and_head(
    encoders: Mapping[str, nn.Module],
    fusion: str,
    num_classes: int,
    hidden: int = 128,
    dropout: float = 0.1,
    reference: bool = False,
    num_heads: int = 4,
    num_layers: int = 1,
) -> tuple[nn.Module, nn.Module]:
    """The fusion called ``fusion`` over the encoders' ``out_dim`` and its head."""
    if not encoders:
        raise ValueError("encoders: expected at least one modality encoder")
    dims = {m: int(encoders[m].out_dim) for m in sorted(encoders)}
    module = build_fusion(
        fusion, dims, hidden, reference=reference, dropout=dropout, num_heads=num_heads, num_layers=num_layers
    )
    return module, build_head(module.out_dim, num_classes, dropout)


def _named_options(
    head: Any, args: tuple[Any, ...], options: Mapping[str, Any], modality_dropout: float
) -> dict[str, Any]:
    """The deprecated form's arguments after ``(encoders, fusion)``, by name, as the old
    signature ``(encoders, fusion, num_classes, hidden, dropout, modality_dropout, reference,
    num_heads, num_layers)`` bound them."""
    positional = (head, *args) if head is not None else args
    if len(positional) > len(_NAMED_OPTIONS):
        raise TypeError(
            f"MultimodalClassifier: expected at most {len(_NAMED_OPTIONS) + 2} positional arguments, "
            f"got {len(positional) + 2}"
        )
    values = dict(zip(_NAMED_OPTIONS, positional))
    for name, value in options.items():
        if name not in _NAMED_OPTIONS:
            raise TypeError(f"MultimodalClassifier: unexpected keyword argument {name!r}")
        if name in values:
            raise TypeError(f"MultimodalClassifier: got multiple values for argument {name!r}")
        values[name] = value
    if "num_classes" not in values:
        raise TypeError("MultimodalClassifier: missing the argument 'num_classes'")
    # `modality_dropout` is a keyword of the new signature too; positionally it came in `args`.
    if "modality_dropout" not in values:
        values["modality_dropout"] = modality_dropout
    return values
