"""`ContrastiveLoss`: CLIP's or SigLIP's image-text loss as a layer that holds the temperature (and
the bias), on one process or data-parallel (each process's rows against the gathered batch)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from mmfast.ops.clip_loss import clip_loss
from mmfast.ops.siglip_loss import siglip_loss

try:  # torch >= 2.5: differentiable, and traceable by torch.compile
    from torch.distributed._functional_collectives import all_gather_single as _all_gather_single
except ImportError:  # pragma: no cover - older torch
    _all_gather_single = None

__all__ = ["ContrastiveLoss"]

KINDS = ("clip", "siglip")
# The initial values CLIP (temperature 0.07) and SigLIP (t' = log 10, b = -10) train from, as
# open_clip's CLIP and CustomTextCLIP set them.
_DEFAULT_LOGIT_SCALE = {"clip": math.log(1 / 0.07), "siglip": math.log(10.0)}
_DEFAULT_LOGIT_BIAS = {"clip": None, "siglip": -10.0}


def _gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """``cat`` over the ranks (in rank order) of every process's ``features``; the backward sums
    the gradients the ranks computed for each block (a reduce-scatter), as open_clip's
    ``gather_with_grad=True`` does."""
    if _all_gather_single is not None:
        return _all_gather_single(features.contiguous(), 0, dist.group.WORLD)
    import torch.distributed.nn.functional as dist_nn  # pragma: no cover - older torch

    return torch.cat(dist_nn.all_gather(features.contiguous()))  # pragma: no cover


def _check_equal_batches(image_features: torch.Tensor, text_features: torch.Tensor, world_size: int) -> None:
    """Raises a ValueError on every rank alike (no rank is left waiting in a collective) unless each
    rank holds as many images as texts and all ranks the same number: the labels of rank ``r``'s rows
    start at ``r * B``. A rank whose own features are not 2-D returns, for the op to name them."""
    rows = [
        x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 2 else -1
        for x in (image_features, text_features)
    ]
    tensors = [x for x in (image_features, text_features) if isinstance(x, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    local = torch.tensor(rows, dtype=torch.int64, device=device)
    gathered = torch.empty(2 * world_size, dtype=torch.int64, device=device)
    dist.all_gather_into_tensor(gathered, local)
    sizes = [tuple(pair) for pair in gathered.view(world_size, 2).tolist()]
    if -1 in rows:
        return
    bad = [rank for rank, pair in enumerate(sizes) if -1 in pair]
    if bad:
        raise ValueError(f"ContrastiveLoss (distributed): rank(s) {bad} passed features that are not [B, D]")
    unpaired = {rank: pair for rank, pair in enumerate(sizes) if pair[0] != pair[1]}
    if unpaired:
        raise ValueError(
            "ContrastiveLoss (distributed): expected as many text_features rows as image_features rows "
            f"(one text per image) on every process, got (images, texts) = {unpaired} on rank(s) "
            f"{list(unpaired)}"
        )
    batches = [pair[0] for pair in sizes]
    if len(set(batches)) != 1:
        raise ValueError(
            "ContrastiveLoss (distributed): expected the same local batch size on every process "
            f"(rank r's pairs are rows r * B to r * B + B - 1 of the global batch), got {batches} "
            f"for ranks 0 to {world_size - 1}; drop the last incomplete batch (drop_last=True)"
        )


class ContrastiveLoss(nn.Module):
    """CLIP's (``kind="clip"``) or SigLIP's (``kind="siglip"``) contrastive loss over a batch of
    matching image and text features, holding the learnable temperature and bias.

    ``loss(image_features, text_features)`` returns the 0-dim loss of `mmfast.ops.clip_loss` /
    `mmfast.ops.siglip_loss` with ``logit_scale = exp(self.logit_scale).clamp(max=max_logit_scale)``
    and ``logit_bias = self.logit_bias``: row ``i`` of ``image_features`` pairs with row ``i`` of
    ``text_features``. The features are used as given: normalise them first, as CLIP does.

    Parameters, as open_clip's ``CLIP`` / ``CustomTextCLIP`` models name and hold them (so their state
    dict keys carry over):

    - ``logit_scale``: 0-dim, the *log* of the multiplier of the logits, initialised to
      ``init_logit_scale``.
    - ``logit_bias``: 0-dim, added to the logits; SigLIP always has one; CLIP has one only when
      ``init_logit_bias`` is given (otherwise the attribute is None and not in the state dict).
      CLIP's softmax is invariant to a constant added to every logit, so a CLIP bias gets a zero
      gradient; it exists for checkpoints that carry one.

    The clamp: CLIP caps the multiplier at 100. open_clip does it by clamping the stored parameter
    in place after every optimiser step (``logit_scale.clamp_(0, math.log(100))`` in its training
    loop); this layer clamps the multiplier where it is used, ``logit_scale.exp().clamp(max=...)``,
    so no training-loop code is needed. The forward values agree; the difference is in the gradient:
    past the cap the multiplier is constant, so ``logit_scale`` gets a zero gradient (that of
    ``torch.clamp``) and the stored value stays wherever it was (the loss no longer moves it; weight
    decay or momentum still may). ``max_logit_scale=None`` disables the clamp.

    Data-parallel training (``torch.distributed`` initialised, world size > 1; ``distributed=None``
    decides that at each call): every process gathers the others' features, with their gradient
    (the backward sums the gradients of each block over the processes), and computes the loss of
    its own rows against the global batch, open_clip's ``local_loss=True, gather_with_grad=True``.
    With local batch ``B`` on rank ``r`` of ``W`` (global batch ``W * B``, rank ``r`` holding pairs
    ``r * B`` to ``r * B + B - 1``):

    - CLIP: ``(clip_loss(img, all_txt, s, b, label_offset=r * B, symmetric=False)
      + clip_loss(txt, all_img, s, b, label_offset=r * B, symmetric=False)) / 2``: the image rows and
      the text columns of the global logits this rank owns, each direction a mean over ``B``.
    - SigLIP: ``siglip_loss(img, all_txt, s, b, label_offset=r * B)``: the ``B`` rows of the global
      logits this rank owns, summed over all ``W * B`` columns, divided by ``B``.

    In both, the global loss is the mean over all ``W * B`` rows (and columns) of per-row terms, and
    each rank's loss the mean over its ``B`` rows, so the mean of the ``W`` local losses *is* the
    global loss; as the gathered features carry their gradient back to the process that made them,
    the gradients ``DistributedDataParallel`` averages over the processes are those of the global
    loss on one process (for the towers, ``logit_scale`` and ``logit_bias`` alike). The returned
    value is this rank's local loss (average it over the ranks to log the global one). Every
    process must hold the same number of pairs (checked; a ValueError on every rank otherwise).

    Args:
        kind: ``"clip"`` or ``"siglip"``.
        init_logit_scale: initial *log* multiplier; None: the kind's default, ``log(1 / 0.07)``
            for CLIP, ``log(10)`` for SigLIP (open_clip's and the papers' values).
        init_logit_bias: initial bias; None: the kind's default, -10 for SigLIP (which needs a
            bias), none for CLIP.
        learnable: True: ``logit_scale`` / ``logit_bias`` are ``nn.Parameter``; False: buffers
            (fixed, still in the state dict under the same names).
        max_logit_scale: cap of the multiplier ``exp(logit_scale)`` (100, CLIP's); None: no cap.
        distributed: True: gather over the default process group (it must be initialised); False:
            never (the loss of the local batch alone); None: gather when ``torch.distributed`` is
            initialised with more than one process.
        device: device of the parameters (move them with ``.to`` like any module's).
        dtype: dtype of the parameters (default: the default dtype); they are cast to the
            features' compute dtype in the loss, with their gradient.

    Example:
        >>> loss_fn = ContrastiveLoss("siglip")
        >>> img = F.normalize(image_tower(images), dim=-1)
        >>> txt = F.normalize(text_tower(texts), dim=-1)
        >>> loss = loss_fn(img, txt)
    """

    logit_bias: torch.Tensor | None

    def __init__(
        self,
        kind: str = "clip",
        init_logit_scale: float | None = None,
        init_logit_bias: float | None = None,
        learnable: bool = True,
        max_logit_scale: float | None = 100.0,
        distributed: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(map(repr, KINDS))}, got {kind!r}")
        if init_logit_scale is None:
            init_logit_scale = _DEFAULT_LOGIT_SCALE[kind]
        if init_logit_bias is None:
            init_logit_bias = _DEFAULT_LOGIT_BIAS[kind]
        _check_number("init_logit_scale", init_logit_scale)
        if init_logit_bias is not None:
            _check_number("init_logit_bias", init_logit_bias)
        if max_logit_scale is not None:
            _check_number("max_logit_scale", max_logit_scale)
            if not max_logit_scale > 0:
                raise ValueError(
                    "max_logit_scale: expected a positive cap on exp(logit_scale), or None, got "
                    f"{max_logit_scale}"
                )
        if not isinstance(learnable, bool):
            raise TypeError(f"learnable: expected a bool, got {type(learnable).__name__}")
        if distributed is not None and not isinstance(distributed, bool):
            raise TypeError(f"distributed: expected True, False or None, got {type(distributed).__name__}")
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating-point dtype, got {dtype}")
        self.kind = kind
        self.learnable = learnable
        self.max_logit_scale = None if max_logit_scale is None else float(max_logit_scale)
        self.distributed = distributed
        factory = {"device": device, "dtype": dtype}
        self._register("logit_scale", torch.tensor(float(init_logit_scale), **factory))
        bias = None if init_logit_bias is None else torch.tensor(float(init_logit_bias), **factory)
        self._register("logit_bias", bias)

    def _register(self, name: str, value: torch.Tensor | None) -> None:
        if self.learnable:
            self.register_parameter(name, None if value is None else nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def scale(self) -> torch.Tensor:
        """The multiplier of the logits: ``exp(logit_scale)``, clamped to ``max_logit_scale``."""
        scale = self.logit_scale.exp()
        if self.max_logit_scale is not None:
            scale = scale.clamp(max=self.max_logit_scale)
        return scale

    def is_distributed(self) -> bool:
        """Whether a call now gathers the other processes' features (see ``distributed``)."""
        if self.distributed is False:
            return False
        initialized = dist.is_available() and dist.is_initialized()
        if self.distributed and not initialized:
            raise RuntimeError(
                "ContrastiveLoss(distributed=True): torch.distributed is not initialised; call "
                "torch.distributed.init_process_group first, or pass distributed=None / False"
            )
        return initialized and dist.get_world_size() > 1

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """The loss of the pairs ``(image_features[i], text_features[i])``, both ``[B, D]``.

        Data-parallel, this process's local loss against the gathered global batch (whose mean over
        the processes is the global loss); see the class documentation.
        """
        scale, bias = self.scale(), self.logit_bias
        if not self.is_distributed():
            if self.kind == "clip":
                return clip_loss(image_features, text_features, scale, bias)
            return siglip_loss(image_features, text_features, scale, bias)

        world_size, rank = dist.get_world_size(), dist.get_rank()
        if not torch.compiler.is_compiling():  # the check reads the sizes: a graph break
            _check_equal_batches(image_features, text_features, world_size)
        offset = rank * image_features.shape[0]
        all_text = _gather_with_grad(text_features)
        if self.kind == "siglip":
            return siglip_loss(image_features, all_text, scale, bias, label_offset=offset)
        all_image = _gather_with_grad(image_features)
        image_rows = clip_loss(image_features, all_text, scale, bias, label_offset=offset, symmetric=False)
        text_rows = clip_loss(text_features, all_image, scale, bias, label_offset=offset, symmetric=False)
        return (image_rows + text_rows) / 2

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, learnable={self.learnable}, bias={self.logit_bias is not None}, "
            f"max_logit_scale={self.max_logit_scale}, distributed={self.distributed}"
        )


def _check_number(argument: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument}: expected a float, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{argument}: expected a finite number, got {value}")
