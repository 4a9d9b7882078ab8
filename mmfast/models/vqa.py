"""Visual question answering: `VQAModel` (an image encoder, a question encoder, a fusion and an answer
classifier) with the fusions of :data:`VQA_FUSIONS`, and `build_vqa_model`, sized for a dataset.

- ``concat``: the pooled question and image vectors into a ``ConcatLinear`` + ReLU layer, then the
  answer layer: the classic CNN + LSTM + MLP baseline.
- ``gated``, ``attention``: the library's ``GatedFusion`` / ``AttentionFusion`` over the two pooled
  vectors, then an MLP.
- ``film``: feature-wise linear modulation (Perez et al., "FiLM: Visual Reasoning with a General
  Conditioning Layer", AAAI 2018): residual blocks over the CNN's feature map whose normalised
  features are scaled and shifted per channel by the question, ``map * (1 + gamma) + beta`` with
  ``gamma, beta`` a linear function of the pooled question; then the image encoder's projection of
  each position, mean- and max-pooling, with the pooled question, into an MLP. Or, where the
  dataset's settings say so (``film_pixel_channels``, Sort-of-CLEVR), :class:`FiLMPixelCNN`: a
  CNN of its own over the pixels, every convolution modulated by the question, with (where
  ``film_relation_channels`` says so) an :class:`AnchorRelations` stage: every position's relation
  to the object the question asks about.
- ``transformer``: the question's tokens and the image's tokens (one per position of the feature
  map, average-pooled to at most 8 x 8, with a 2-D position encoding) through
  :class:`~mmfast.models.TransformerFusion`: a fusion
  token and the question attend over the image regions; then an MLP.

With one modality (``modalities=["text"]``: the question-only baseline; ``["image"]``: image
only) only ``concat`` applies: the one pooled vector through the ``ConcatLinear`` + ReLU layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfast.data.info import DatasetInfo
from mmfast.encoders.image import ImageEncoder
from mmfast.encoders.text import TextEncoder
from mmfast.models.concat import ConcatFusion
from mmfast.models.fusion import build_fusion, build_head
from mmfast.models.transformer import TransformerFusion
from mmfast.nn.concat_linear import ConcatLinear
from mmfast.nn.film import FiLM
from mmfast.nn.reference import ReferenceConcatLinear, ReferenceFiLM

__all__ = [
    "DATASET_MODEL_DEFAULTS",
    "VQA_FUSIONS",
    "VQA_MODEL_DEFAULTS",
    "FiLMBlock",
    "FiLMFusion",
    "AnchorRelations",
    "FiLMPixelCNN",
    "VQAModel",
    "build_vqa_model",
    "coordinate_conv",
    "coordinate_maps",
    "vqa_model_settings",
]

VQA_FUSIONS: tuple[str, ...] = ("concat", "gated", "attention", "film", "transformer")
# The modality names of a VQA batch: the image and the question's token ids.
IMAGE, QUESTION = "image", "text"


def coordinate_maps(feature_map: torch.Tensor) -> torch.Tensor:
    """``[B, 2, H, W]``: each position's column (x) and row (y), from -1 to 1, in the dtype and on
    the device of ``feature_map`` ``[B, C, H, W]`` (the coordinate channels of the Relation
    Networks and FiLM papers). For a channels-last ``feature_map`` the maps are written out channels
    last (``torch.cat`` keeps that layout only when all its inputs have it), else they are a
    broadcast view."""
    batch, _, height, width = feature_map.shape
    options = {"dtype": feature_map.dtype, "device": feature_map.device}
    ys = torch.linspace(-1.0, 1.0, height, **options)[:, None].expand(height, width)
    xs = torch.linspace(-1.0, 1.0, width, **options)[None, :].expand(height, width)
    maps = torch.stack([xs, ys]).expand(batch, 2, height, width)
    if _is_channels_last(feature_map):
        return maps.contiguous(memory_format=torch.channels_last)
    return maps


def coordinate_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(torch.cat([x, coordinate_maps(x)], dim=1))`` without building the concatenation.

    The convolution is linear in its input channels: the part that reads the two coordinate
    channels (the weight's last two input channels) depends on the position only, not on the
    sample, so it is computed once on one ``[1, 2, H, W]`` map, with the bias, and added to the
    convolution of ``x`` alone over the other input channels. Same parameters (``conv``'s own), the
    same result up to rounding, and no ``[B, C + 2, H, W]`` copy of the map to write, keep for the
    backward and slice the gradient out of. On an AMD EPYC Zen 4 (AVX-512, 2 threads) the
    forward + backward of Sort-of-CLEVR's ``FiLMPixelCNN`` (batch 64, 24 channels, channels last)
    took 34-35 ms instead of 42 (medians of 20 interleaved rounds, one process).
    """
    channels = x.shape[1]
    if conv.in_channels != channels + 2 or conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError(
            f"coordinate_conv: expected a zero-padded, ungrouped Conv2d over {channels} + 2 channels, "
            f"got {conv}"
        )
    weight = conv.weight
    args = (conv.stride, conv.padding, conv.dilation)
    positions = F.conv2d(coordinate_maps(x[:1]), weight[:, channels:], conv.bias, *args)
    return F.conv2d(x, weight[:, :channels], None, *args) + positions


def _is_channels_last(feature_map: torch.Tensor) -> bool:
    return feature_map.is_contiguous(memory_format=torch.channels_last) and not feature_map.is_contiguous()


class FiLMBlock(nn.Module):
    """A residual block modulated by a condition (FiLM's ResBlock): ``x = relu(conv1x1(x))``, then
    ``x + relu(film(bn(conv3x3(x)), condition))``; the BatchNorm has no affine parameters of its own
    (FiLM's ``gamma`` and ``beta`` take their place). The modulation is :class:`mmfast.nn.FiLM`
    (``reference=True``: :class:`mmfast.nn.reference.ReferenceFiLM`). With ``coords`` the
    :func:`coordinate_maps` join the input of the 1x1 convolution, as in the FiLM paper, so that
    each position knows where it is."""

    def __init__(self, channels: int, cond_dim: int, reference: bool = False, coords: bool = False) -> None:
        super().__init__()
        self.coords = bool(coords)
        self.conv1 = nn.Conv2d(channels + (2 if coords else 0), channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels, affine=False)
        # The fused mmfast.nn.FiLM (mmfast.ops.film), or its plain-PyTorch twin.
        self.film = (ReferenceFiLM if reference else FiLM)(channels, cond_dim)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, C, H, W]``, ``condition`` ``[B, cond_dim]`` -> ``[B, C, H, W]``."""
        x = torch.relu(coordinate_conv(self.conv1, x) if self.coords else self.conv1(x))
        return x + torch.relu(self.film(self.norm(self.conv2(x)), condition))


class FiLMPixelCNN(nn.Module):
    """A CNN conditioned on the question from its first layer: ``layers`` x (the input with its
    :func:`coordinate_maps` -> conv3x3 stride 2 -> BatchNorm without affine -> :class:`FiLM` by the
    question -> ReLU), then the flattened map and the question (and, with ``relation_channels``,
    the :class:`AnchorRelations` of the positions of the map after ``relation_layer``
    convolutions, with their coordinates) into a ``ConcatLinear`` + ReLU layer: ``[B, out_dim]``.

    Why from the pixels: on Sort-of-CLEVR every question is about "the X object", and a CNN that
    does not know the question pools all six objects into features from which a late fusion only
    learns the image's global statistics (how many squares), not which object has colour X.
    Modulating the first convolution lets the question pick the asked colour's pixels; its
    position then survives in the flattened map (and the coordinates), which the relational
    questions (closest, furthest) need. Each FiLM generator starts at zero, so the network starts
    as the plain CNN (``1 + gamma = 1``, ``beta = 0``).

    Args:
        image_shape: ``[C, H, W]`` of the images.
        channels: channels of every convolution.
        cond_dim: size of the question vector.
        out_dim: size of the output.
        layers: strided convolutions (each halves the side, rounding up: 75 -> 38 -> 19 -> 10 -> 5).
        reference: the ``FiLM`` and ``ConcatLinear`` layers from :mod:`mmfast.nn.reference`.
        relation_channels: width of the :class:`AnchorRelations` stage (0: none).
        relation_layer: the relations read the map after this many convolutions (1 to
            ``layers``; 0: the last map). An earlier map has 4x the positions per layer: a
            finer grid of the objects' positions, for the questions about distances.
        channels_last: run the convolutions channels last (the images are converted in
            :meth:`forward`): oneDNN's convolutions are faster on that layout, and the FiLM op and
            the coordinate maps keep it. The result is the same up to rounding.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: int,
        cond_dim: int,
        out_dim: int,
        layers: int = 4,
        reference: bool = False,
        relation_channels: int = 0,
        channels_last: bool = False,
        relation_layer: int = 0,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape: expected [C, H, W], got {list(image_shape)}")
        if channels < 1 or layers < 1:
            raise ValueError(f"FiLMPixelCNN: expected channels and layers >= 1, got {channels} and {layers}")
        in_channels, height, width = (int(n) for n in image_shape)
        self.out_dim = out_dim
        self.convs = nn.ModuleList(
            nn.Conv2d((in_channels if i == 0 else channels) + 2, channels, 3, stride=2, padding=1)
            for i in range(layers)
        )
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.convs.to(memory_format=torch.channels_last)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels, affine=False) for _ in range(layers))
        self.films = nn.ModuleList(
            (ReferenceFiLM if reference else FiLM)(channels, cond_dim) for _ in range(layers)
        )
        for film in self.films:
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        for _ in range(layers):  # a 3x3 convolution of stride 2 and padding 1
            height, width = (height + 1) // 2, (width + 1) // 2
        if relation_channels < 0:
            raise ValueError(f"relation_channels: expected >= 0 (0: off), got {relation_channels}")
        if not 0 <= relation_layer <= layers:
            raise ValueError(
                f"relation_layer: expected 1 to layers={layers}, or 0 (the last), got {relation_layer}"
            )
        self.relation_layer = int(relation_layer) or layers
        self.relations = (
            AnchorRelations(channels + 2, cond_dim, relation_channels) if relation_channels else None
        )
        layer = ReferenceConcatLinear if reference else ConcatLinear
        widths = [channels * height * width, cond_dim]
        if self.relations is not None:
            widths += [self.relations.out_dim]
        self.pool = layer(widths, out_dim, activation="relu")

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``images`` ``[B, C, H, W]``, ``condition`` ``[B, cond_dim]`` -> ``[B, out_dim]``."""
        # After `self.to(memory_format=torch.channels_last)` the maps stay channels last from the
        # first convolution on (its weight decides), the coordinate maps and the FiLM op included.
        x = images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        relations = None
        for layer, (conv, norm, film) in enumerate(zip(self.convs, self.norms, self.films), start=1):
            x = torch.relu(film(norm(coordinate_conv(conv, x)), condition))
            if self.relations is not None and layer == self.relation_layer:
                cells = torch.cat([x, coordinate_maps(x)], dim=1).flatten(2)
                relations = self.relations(cells, condition)
        features = [x.flatten(1), condition]
        if relations is not None:
            features.append(relations)
        return self.pool(features)


class AnchorRelations(nn.Module):
    """Every position's relation to the one the question asks about: the Relation Networks' ``g``
    over the pairs (the asked object, each position) only, rather than over all pairs.

    The asked object (the anchor) is an attention-weighted mean of the positions, its weights a
    softmax over positions of a score from each position and the question; then each position,
    the anchor and the question go through two 1x1 layers (``g``, ReLU), summed over positions
    (as the RN sums over pairs), and returned with the anchor itself: ``[B, out_dim]``. Counting
    the objects that share the anchor's shape, or finding the one closest to it, is then a sum or
    a comparison per position rather than a product the answer layer has to learn across the
    flattened map.

    Args:
        cell_dim: features of each position (with its coordinates).
        cond_dim: size of the question vector.
        channels: width of ``g``.
    """

    def __init__(self, cell_dim: int, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.key = nn.Conv1d(cell_dim, channels, 1)
        self.query = nn.Linear(cond_dim, channels)
        self.relate = nn.Sequential(
            nn.Conv1d(2 * cell_dim + cond_dim, channels, 1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1),
            nn.ReLU(),
        )
        self.out_dim = channels + cell_dim

    def attention(self, cells: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The anchor's weights over the positions ``[B, N]`` (a softmax of each position's key
        against the question's query)."""
        scores = torch.einsum("bcn,bc->bn", self.key(cells), self.query(condition))
        return torch.softmax(scores / self.query.out_features**0.5, dim=-1)

    def forward(self, cells: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``cells`` ``[B, cell_dim, N]``, ``condition`` ``[B, cond_dim]`` -> ``[B, out_dim]``."""
        anchor = torch.einsum("bcn,bn->bc", cells, self.attention(cells, condition))
        positions = cells.shape[-1]
        anchor_everywhere = anchor[..., None].expand(-1, -1, positions)
        pairs = torch.cat([cells, anchor_everywhere, condition[..., None].expand(-1, -1, positions)], dim=1)
        return torch.cat([self.relate(pairs).sum(dim=-1), anchor], dim=1)


class FiLMFusion(nn.Module):
    """``blocks`` :class:`FiLMBlock` over an image feature map, conditioned on the pooled question;
    then each position's features (through ``projection``, when given: the image encoder's own
    token projection), their mean and their max over positions and the question itself into a
    ``ConcatLinear`` + ReLU layer: ``[B, out_dim]``.

    Args:
        channels: channels of the feature map.
        cond_dim: size of the question vector.
        out_dim: size of the output.
        blocks: FiLM'd residual blocks.
        reference: the ``FiLM`` and ``ConcatLinear`` layers from :mod:`mmfast.nn.reference`.
        token_dim: size of each position after ``projection`` (default: ``channels``).
        coords: each block also sees the positions' coordinates (:class:`FiLMBlock`).
    """

    def __init__(
        self,
        channels: int,
        cond_dim: int,
        out_dim: int,
        blocks: int = 2,
        reference: bool = False,
        token_dim: int | None = None,
        coords: bool = False,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks: expected >= 1 FiLM blocks, got {blocks}")
        self.out_dim = out_dim
        self.blocks = nn.ModuleList(FiLMBlock(channels, cond_dim, reference, coords) for _ in range(blocks))
        layer = ReferenceConcatLinear if reference else ConcatLinear
        width = channels if token_dim is None else token_dim
        # The pooled question joins the pooled image: the answer layer sees what is asked directly,
        # and the modulation only has to carry what the image says about it.
        self.pool = layer([width, width, cond_dim], out_dim, activation="relu")

    def forward(
        self, feature_map: torch.Tensor, condition: torch.Tensor, projection: nn.Module | None = None
    ) -> torch.Tensor:
        """``feature_map`` ``[B, C, H, W]``, ``condition`` ``[B, cond_dim]`` -> ``[B, out_dim]``."""
        x = feature_map
        for block in self.blocks:
            x = block(x, condition)
        tokens = x.flatten(2).transpose(1, 2)  # [B, H * W, C]
        if projection is not None:
            tokens = projection(tokens)
        return self.pool([tokens.mean(dim=1), tokens.amax(dim=1), condition])


def _mlp_head(in_dim: int, hidden: int, num_answers: int, dropout: float) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout -> Linear``: the answer classifier after a fusion."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_answers)
    )


class VQAModel(nn.Module):
    """Answers a question about an image: logits ``[B, num_answers]`` from a batch with
    ``"image"`` ``[B, C, H, W]`` and ``"text"`` (the question's ids ``[B, L]``, with
    ``"text_lengths"``); other keys are ignored. See the module docstring for the fusions.

    Args:
        image_encoder: an :class:`~mmfast.encoders.ImageEncoder` (None: question only).
        question_encoder: a :class:`~mmfast.encoders.TextEncoder` (None: image only).
        fusion: one of :data:`VQA_FUSIONS` (``concat`` only, with a single encoder).
        num_answers: number of answers (at least 2).
        hidden: width of the fusion and of the MLP.
        dropout: before the answer layer (and inside the transformer fusion).
        num_heads, num_layers: of the transformer fusion.
        film_blocks: FiLM'd residual blocks of the ``film`` fusion.
        image_grid: the transformer fusion's image tokens are the feature map average-pooled to
            at most ``image_grid x image_grid`` positions (None: every position).
        reference: the fusion layers from :mod:`mmfast.nn.reference` (same parameter names).
        film_coords: the ``film`` fusion's blocks also see the coordinates of each position.
        film_pixel_channels: when positive, the ``film`` fusion is a :class:`FiLMPixelCNN` of
            this many channels over the images themselves (of shape ``image_shape``), instead of
            FiLM blocks over the image encoder's feature map; ``image_encoder`` is then None.
        image_shape: ``[C, H, W]`` of the images (needed with ``film_pixel_channels`` only).
        film_relation_channels: with ``film_pixel_channels``, the width of the
            :class:`AnchorRelations` stage (0: none).
        film_relation_layer: the relations read the CNN's map after this many convolutions
            (0: the last; :class:`FiLMPixelCNN`'s ``relation_layer``).
        film_channels_last: with ``film_pixel_channels``, the CNN runs channels last.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder | None,
        question_encoder: TextEncoder | None,
        fusion: str = "concat",
        num_answers: int = 13,
        *,
        hidden: int = 128,
        dropout: float = 0.1,
        num_heads: int = 4,
        num_layers: int = 2,
        film_blocks: int = 2,
        image_grid: int | None = 8,
        reference: bool = False,
        film_coords: bool = False,
        film_pixel_channels: int = 0,
        image_shape: Sequence[int] | None = None,
        film_relation_channels: int = 0,
        film_channels_last: bool = False,
        film_relation_layer: int = 0,
    ) -> None:
        super().__init__()
        if image_grid is not None and image_grid < 1:
            raise ValueError(f"image_grid: expected a positive side or None, got {image_grid}")
        self.image_grid = image_grid
        if fusion not in VQA_FUSIONS:
            raise ValueError(f"fusion: expected one of {', '.join(VQA_FUSIONS)}, got {fusion!r}")
        if film_pixel_channels < 0:
            raise ValueError(f"film_pixel_channels: expected >= 0 (0: off), got {film_pixel_channels}")
        # The film fusion from the pixels reads the images itself: the image is a modality of the
        # model without an image encoder.
        self.film_pixel_channels = int(film_pixel_channels) if fusion == "film" else 0
        if self.film_pixel_channels:
            if image_encoder is not None:
                raise ValueError(
                    "image_encoder: film_pixel_channels > 0 conditions a CNN of its own on the question; "
                    "expected None"
                )
            if image_shape is None:
                raise ValueError("image_shape: film_pixel_channels > 0 needs the images' [C, H, W]")
        encoders = {IMAGE: image_encoder, QUESTION: question_encoder}
        present = {name: encoder for name, encoder in encoders.items() if encoder is not None}
        if not present:
            raise ValueError("VQAModel: expected an image encoder, a question encoder or both")
        modalities = set(present) | ({IMAGE} if self.film_pixel_channels else set())
        if len(modalities) == 1 and fusion != "concat":
            raise ValueError(
                f"fusion={fusion!r}: needs the image and the question; with only {next(iter(modalities))!r} "
                "use fusion='concat'"
            )
        self.fusion_kind = fusion
        self.modalities: tuple[str, ...] = tuple(sorted(modalities))
        self.encoders = nn.ModuleDict(present)
        if fusion == "concat":
            dims = [int(present[m].out_dim) for m in self.modalities]
            self.fusion: nn.Module = ConcatFusion(dims, hidden, reference)
            self.head: nn.Module = build_head(hidden, num_answers, dropout)
            return
        dims = [int(present[m].out_dim) for m in self.modalities if m in present]
        if self.film_pixel_channels:
            self.fusion = FiLMPixelCNN(
                image_shape,
                self.film_pixel_channels,
                question_encoder.out_dim,
                hidden,
                reference=reference,
                relation_channels=film_relation_channels,
                channels_last=film_channels_last,
                relation_layer=film_relation_layer,
            )
        elif fusion == "film":
            self.fusion = FiLMFusion(
                image_encoder.feature_channels,
                question_encoder.out_dim,
                hidden,
                film_blocks,
                reference,
                token_dim=image_encoder.out_dim,
                coords=film_coords,
            )
        elif fusion == "transformer":
            self.fusion = TransformerFusion(
                dims, hidden, num_heads, num_layers, dropout=dropout, reference=reference
            )
        else:
            self.fusion = build_fusion(fusion, dict(zip(self.modalities, dims)), hidden, reference=reference)
        self.head = _mlp_head(self.fusion.out_dim, hidden, num_answers, dropout)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, num_answers]``."""
        missing = [m for m in self.modalities if m not in batch]
        if missing:
            raise ValueError(f"batch: expected the keys {list(self.modalities)}, missing {missing}")
        lengths = batch.get(f"{QUESTION}_lengths")
        if self.film_pixel_channels:
            question = self.encoders[QUESTION](batch[QUESTION], lengths)
            return self.head(self.fusion(batch[IMAGE], question))
        if self.fusion_kind == "film":
            image = self.encoders[IMAGE].features(batch[IMAGE])
            question = self.encoders[QUESTION](batch[QUESTION], lengths)
            return self.head(self.fusion(image, question, self.encoders[IMAGE].proj))
        if self.fusion_kind == "transformer":
            image_encoder = self.encoders[IMAGE]
            feature_map = image_encoder.features(batch[IMAGE])
            if self.image_grid is not None and max(feature_map.shape[-2:]) > self.image_grid:
                side = (
                    min(self.image_grid, feature_map.shape[-2]),
                    min(self.image_grid, feature_map.shape[-1]),
                )
                feature_map = F.adaptive_avg_pool2d(feature_map, side)
            image_tokens = image_encoder.tokens_of(feature_map).tokens
            question_tokens, question_mask = self.encoders[QUESTION].forward_tokens(batch[QUESTION], lengths)
            # Sorted modality order: image, then text.
            return self.head(self.fusion([image_tokens, question_tokens], [None, question_mask]))
        features = [self.encoders[m](batch[m], lengths if m == QUESTION else None) for m in self.modalities]
        return self.head(self.fusion(features))


# The model settings of build_vqa_model, and those of datasets that differ (written once here).
VQA_MODEL_DEFAULTS: dict[str, Any] = {
    "image_channels": (8, 16, 32),
    "stem_stride": 1,
    "num_heads": 4,
    "num_layers": 2,
    "film_blocks": 2,
    "film_coords": False,
    "film_pixel_channels": 0,
    "film_relation_channels": 0,
    "film_relation_layer": 0,
    "film_channels_last": False,
    "image_grid": 8,
    "text_bag_of_words": False,
}
DATASET_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # 75 x 75 images of six 11-pixel objects: a strided stem (the objects stay several pixels
    # wide) and two stages only (a 19 x 19 map); the transformer over a 5 x 5 grid of image
    # tokens, as the RN paper's 5 x 5 cells; FiLM blocks (with film_pixel_channels=0) with
    # coordinates (the relational questions are about distances).
    "sort-of-clevr": {
        "image_channels": (8, 16),
        "stem_stride": 2,
        "film_blocks": 3,
        "film_coords": True,
        # film: FiLMPixelCNN, 4 question-conditioned convolutions of 24 channels from the pixels
        # (75 -> 5 x 5): FiLM over the encoder's 19 x 19 map never bound colours to objects.
        "film_pixel_channels": 24,
        # and the AnchorRelations stage of width 64 over its last map: without it the count
        # questions ("how many objects have X's shape") stayed at the global-counts plateau.
        "film_relation_channels": 64,
        # channels last: a training step 15% faster on 2 cores (oneDNN's convolutions).
        "film_channels_last": True,
        "num_layers": 4,
        "image_grid": 5,
        # The question's pooled vector also sees the mean of its word embeddings (TextEncoder's
        # bag_of_words): in runs without it the LSTM learnt to drop the colour from the count
        # questions' template, which then stayed at the answer the image alone gives.
        "text_bag_of_words": True,
    },
}


def vqa_model_settings(dataset: str, **overrides: Any) -> dict[str, Any]:
    """The :data:`VQA_MODEL_DEFAULTS` with dataset ``dataset``'s own and then the non-None
    ``overrides`` in their place."""
    unknown = set(overrides) - set(VQA_MODEL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown VQA model setting(s) {sorted(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return {**VQA_MODEL_DEFAULTS, **DATASET_MODEL_DEFAULTS.get(dataset, {}), **given}


def build_vqa_model(
    info: DatasetInfo,
    *,
    fusion: str = "concat",
    modalities: Sequence[str] | None = None,
    hidden: int = 128,
    dropout: float = 0.1,
    reference: bool = False,
    text_encoder: str = "lstm",
    image_channels: Sequence[int] | None = None,
    stem_stride: int | None = None,
    num_heads: int | None = None,
    num_layers: int | None = None,
    film_blocks: int | None = None,
    film_coords: bool | None = None,
    film_pixel_channels: int | None = None,
    film_relation_channels: int | None = None,
    film_relation_layer: int | None = None,
    film_channels_last: bool | None = None,
    image_grid: int | None = None,
    text_bag_of_words: bool | None = None,
) -> VQAModel:
    """A :class:`VQAModel` for dataset ``info`` (images and questions as ``"text"``; the answers are
    its classes): an :class:`~mmfast.encoders.ImageEncoder` with ``image_channels`` (its tokens with
    2-D positions) and a :class:`~mmfast.encoders.TextEncoder` of kind ``text_encoder``, both of
    output size ``hidden``; ``modalities`` ``["text"]`` or ``["image"]`` for a single-modality
    baseline (default: both). The settings left None take the dataset's defaults
    (:func:`vqa_model_settings`: :data:`DATASET_MODEL_DEFAULTS`, else :data:`VQA_MODEL_DEFAULTS`)."""
    settings = vqa_model_settings(
        info.name,
        image_channels=image_channels,
        stem_stride=stem_stride,
        num_heads=num_heads,
        num_layers=num_layers,
        film_blocks=film_blocks,
        film_coords=film_coords,
        film_pixel_channels=film_pixel_channels,
        film_relation_channels=film_relation_channels,
        film_relation_layer=film_relation_layer,
        film_channels_last=film_channels_last,
        image_grid=image_grid,
        text_bag_of_words=text_bag_of_words,
    )
    chosen = tuple(sorted(info.modalities if modalities is None else modalities))
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= {IMAGE, QUESTION}:
        raise ValueError(f"modalities: expected image, text or both, got {list(chosen)}")
    if info.image_shape is None or info.vocab_size is None:
        raise ValueError(f"dataset {info.name!r}: VQA needs images and questions (text)")
    image_encoder = question_encoder = None
    # The film fusion from the pixels (with both modalities; alone, VQAModel says what fusion applies).
    pixel_channels = settings["film_pixel_channels"] if fusion == "film" and len(chosen) == 2 else 0
    if IMAGE in chosen and not pixel_channels:
        image_encoder = ImageEncoder(
            info.image_shape[0],
            hidden,
            channels=settings["image_channels"],
            token_positions=True,
            stem_stride=settings["stem_stride"],
        )
    if QUESTION in chosen:
        question_encoder = TextEncoder(
            info.vocab_size,
            hidden,
            kind=text_encoder,
            pad_id=info.pad_id,
            # The transformer fusion reads the question's tokens, not its pooled vector.
            bag_of_words=settings["text_bag_of_words"] and fusion != "transformer",
        )
    return VQAModel(
        image_encoder,
        question_encoder,
        fusion,
        info.num_classes,
        hidden=hidden,
        dropout=dropout,
        num_heads=settings["num_heads"],
        num_layers=settings["num_layers"],
        film_blocks=settings["film_blocks"],
        image_grid=settings["image_grid"],
        reference=reference,
        film_coords=settings["film_coords"],
        film_pixel_channels=pixel_channels,
        image_shape=info.image_shape,
        film_relation_channels=settings["film_relation_channels"],
        film_relation_layer=settings["film_relation_layer"],
        film_channels_last=settings["film_channels_last"],
    )
