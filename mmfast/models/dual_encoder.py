"""`DualEncoder`: an image tower and a text tower (encoder + projection head each) mapping both
modalities into one L2-normalised embedding space, trained with a contrastive loss (CLIP's or
SigLIP's); `build_dual_encoder` sizes one for a dataset."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmfast.data.info import DatasetInfo
from mmfast.encoders.image import ImageEncoder
from mmfast.encoders.text import TextEncoder
from mmfast.nn import ContrastiveLoss

__all__ = ["LOSSES", "DualEncoder", "ProjectionHead", "SpatialProjection", "build_dual_encoder"]

LOSSES = ("clip", "siglip")
# The initial log multipliers (and SigLIP's bias) of the logits: CLIP's temperature 0.07 (Radford et
# al., 2021); SigLIP's t' = log 10, b = -10 (Zhai et al., 2023), so its logits start at 10 cos - 10.
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)
SIGLIP_INIT_LOGIT_BIAS = -10.0


class ProjectionHead(nn.Module):
    """``Linear(in_dim, out_dim)``, or with ``hidden`` a ``Linear -> GELU -> Linear`` MLP.

    Args:
        in_dim: size of the encoder's output.
        out_dim: size of the joint embedding.
        hidden: width of the MLP's hidden layer (None: a single linear layer).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        if min(in_dim, out_dim) < 1 or (hidden is not None and hidden < 1):
            raise ValueError(f"ProjectionHead: expected positive sizes, got {in_dim}, {out_dim}, {hidden}")
        self.in_dim, self.out_dim = in_dim, out_dim
        if hidden is None:
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` -> ``[B, out_dim]``."""
        return self.net(features)


class SpatialProjection(nn.Module):
    """A projection head over the tokens of a square feature map that keeps where things are.

    Global average pooling (what :class:`~mmfast.encoders.ImageEncoder` returns) forgets the
    position of what it pools; a caption that says "at the top left" needs it. This head takes the
    encoder's tokens ``[B, side * side, D]`` (``forward_tokens``), average-pools them to a
    ``grid x grid`` map, flattens it and projects ``grid * grid * D`` to ``out_dim`` (a
    :class:`ProjectionHead`). It declares ``consumes_tokens = True``, so that :class:`DualEncoder`
    passes it ``encoder.forward_tokens(x)`` instead of ``encoder(x)``.

    Args:
        in_dim: size ``D`` of each token.
        out_dim: size of the joint embedding.
        grid: side of the pooled map.
        hidden: width of the MLP's hidden layer (None: a single linear layer).
    """

    consumes_tokens = True

    def __init__(self, in_dim: int, out_dim: int, grid: int = 3, hidden: int | None = None) -> None:
        super().__init__()
        if grid < 1:
            raise ValueError(f"grid: expected a positive side, got {grid}")
        self.in_dim, self.out_dim, self.grid = in_dim, out_dim, grid
        self.proj = ProjectionHead(grid * grid * in_dim, out_dim, hidden)

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, side * side, in_dim]`` tokens in row-major order (all valid) -> ``[B, out_dim]``."""
        if tokens.dim() != 3 or tokens.shape[2] != self.in_dim:
            raise ValueError(f"tokens: expected [B, side * side, {self.in_dim}], got {list(tokens.shape)}")
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1] or side < 1:
            raise ValueError(f"tokens: expected the {tokens.shape[1]} tokens of a square feature map")
        if padding_mask is not None and bool(padding_mask.any()):
            raise ValueError("padding_mask: a feature map has no padding")
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], self.in_dim, side, side)
        pooled = F.adaptive_avg_pool2d(grid, self.grid)
        return self.proj(pooled.flatten(1))


class DualEncoder(nn.Module):
    """Two towers, one per modality, into one normalised embedding space, and a contrastive loss.

    ``encode_image(images)`` is ``normalize(image_head(image_encoder(images)))`` and
    ``encode_text(tokens, lengths)`` the same with the text modules, ``[B, embed_dim]`` rows of unit
    norm; a head that declares ``consumes_tokens = True`` (:class:`SpatialProjection`) receives
    ``encoder.forward_tokens(x, lengths)`` instead. ``forward(batch)`` returns the loss of the
    batch's pairs (``batch[image_key][i]`` matches ``batch[text_key][i]``), ``loss(image_embeddings,
    text_embeddings)``: CLIP's or SigLIP's loss layer, or any module with that call.

    Args:
        image_encoder, text_encoder: modality encoders (see :class:`mmfast.encoders.ModalityEncoder`).
        image_head, text_head: projections of the encoders' outputs to a common size.
        loss: the loss layer (e.g. :class:`mmfast.nn.ContrastiveLoss`; data-parallel, it contrasts
            each process's pairs with the gathered global batch).
        image_key, text_key: the batch keys of the two modalities (lengths at ``"<key>_lengths"``).

    Example:
        >>> model = DualEncoder(ImageEncoder(3, 128), TextEncoder(vocab, 128),
        ...                     ProjectionHead(128, 64), ProjectionHead(128, 64), ContrastiveLoss("clip"))
        >>> loss = model(batch); loss.backward()
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_head: nn.Module,
        text_head: nn.Module,
        loss: nn.Module,
        *,
        image_key: str = "image",
        text_key: str = "text",
    ) -> None:
        super().__init__()
        for name, module in (
            ("image_encoder", image_encoder),
            ("text_encoder", text_encoder),
            ("image_head", image_head),
            ("text_head", text_head),
            ("loss", loss),
        ):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name}: expected an nn.Module, got {type(module).__name__}")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_head = image_head
        self.text_head = text_head
        self.loss = loss
        self.image_key = image_key
        self.text_key = text_key

    @staticmethod
    def _tower(
        encoder: nn.Module, head: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        if getattr(head, "consumes_tokens", False):
            features = head(*encoder.forward_tokens(x, lengths))
        else:
            features = head(encoder(x, lengths))
        return F.normalize(features, dim=-1)

    def encode_image(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm embeddings ``[B, embed_dim]`` of images ``[B, C, H, W]``."""
        return self._tower(self.image_encoder, self.image_head, images, lengths)

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm embeddings ``[B, embed_dim]`` of padded token ids ``[B, L]`` with int64
        ``lengths`` ``[B]`` (default: the non-padding count)."""
        return self._tower(self.text_encoder, self.text_head, tokens, lengths)

    def embed(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and text embeddings of a batch (as :func:`mmfast.data.collate` gives it)."""
        for key in (self.image_key, self.text_key):
            if key not in batch:
                raise ValueError(
                    f"batch: expected the keys {self.image_key!r} and {self.text_key!r}, got {sorted(batch)}"
                )
        images = self.encode_image(batch[self.image_key], batch.get(f"{self.image_key}_lengths"))
        texts = self.encode_text(batch[self.text_key], batch.get(f"{self.text_key}_lengths"))
        if images.shape[0] != texts.shape[0]:
            raise ValueError(f"batch: {images.shape[0]} images but {texts.shape[0]} texts")
        return images, texts

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The 0-dim contrastive loss of the batch's image-text pairs."""
        return self.loss(*self.embed(batch))


def build_dual_encoder(
    info: DatasetInfo,
    *,
    loss: str = "clip",
    embed_dim: int = 64,
    hidden: int = 128,
    text_encoder: str = "lstm",
    image_channels: Sequence[int] = (16, 32),
    text_hidden: int = 64,
    spatial_grid: int | None = 3,
    head_hidden: int | None = 256,
) -> DualEncoder:
    """A dual encoder for the image and text of dataset ``info``.

    The image tower is an :class:`~mmfast.encoders.ImageEncoder` (``out_dim = hidden``) with a
    :class:`SpatialProjection` over a ``spatial_grid`` x ``spatial_grid`` pooling of its last
    feature map (None: a :class:`ProjectionHead` of the globally pooled features); the text tower
    a :class:`~mmfast.encoders.TextEncoder` with a :class:`ProjectionHead`. The loss is a
    :class:`mmfast.nn.ContrastiveLoss`, CLIP's (temperature initialised to 0.07) or SigLIP's
    (``t = 10``, ``b = -10`` initially), learnable, the multiplier capped at 100.

    Args:
        info: from :func:`mmfast.data.dataset_info`; needs the ``"image"`` and ``"text"`` modalities.
        loss: ``"clip"`` or ``"siglip"``.
        embed_dim: size of the joint embedding.
        hidden: output size of both encoders.
        text_encoder: ``"lstm"`` or ``"transformer"``.
        image_channels: channels of the image encoder's stages.
        text_hidden: the LSTM's hidden size per direction (the transformer's feed-forward size).
        spatial_grid: side of the image head's pooled map, or None for global pooling.
        head_hidden: hidden width of the projection MLPs (None: linear projections).
    """
    missing = [m for m in ("image", "text") if m not in info.modalities]
    if missing or info.image_shape is None or info.vocab_size is None:
        raise ValueError(
            f"dataset {info.name!r}: a dual encoder needs images and text, "
            f"the dataset has {list(info.modalities)}"
        )
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
    image = ImageEncoder(info.image_shape[0], hidden, channels=image_channels)
    text = TextEncoder(info.vocab_size, hidden, kind=text_encoder, hidden=text_hidden, pad_id=info.pad_id)
    image_head: nn.Module = (
        ProjectionHead(hidden, embed_dim, head_hidden)
        if spatial_grid is None
        else SpatialProjection(hidden, embed_dim, spatial_grid, head_hidden)
    )
    text_head = ProjectionHead(hidden, embed_dim, head_hidden)
    if loss == "clip":
        criterion = ContrastiveLoss("clip", init_logit_scale=CLIP_INIT_LOGIT_SCALE)
    else:
        criterion = ContrastiveLoss(
            "siglip", init_logit_scale=SIGLIP_INIT_LOGIT_SCALE, init_logit_bias=SIGLIP_INIT_LOGIT_BIAS
        )
    return DualEncoder(image, text, image_head, text_head, criterion)
