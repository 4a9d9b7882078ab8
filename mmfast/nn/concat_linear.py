"""`ConcatLinear`: a drop-in for ``act(nn.Linear(sum(in_features), out)(torch.cat(xs, -1)))``,
and for torchmultimodal's ``ConcatFusionModule(projection=nn.Linear(...))``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmfast.nn._modality_inputs import ModalityInputs, NotScriptable, mapping_order, ordered_inputs
from mmfast.ops import concat_linear
from mmfast.ops.activations import check_activation

# The state dict keys of torchmultimodal's ConcatFusionModule with a Linear projection, and the
# ConcatLinear keys they hold the values of.
_CONCAT_FUSION_KEYS = {"projection.weight": "weight", "projection.bias": "bias"}


class ConcatLinear(NotScriptable, nn.Module):
    """Linear layer over the concatenation of several feature tensors, with a fused activation.

    Computes ``act(cat(xs, -1) @ weight.T + bias)`` without materialising the concatenation.
    Parameters are named and shaped like :class:`torch.nn.Linear`'s (``weight`` of shape
    ``[out_features, sum(in_features)]``, ``bias`` of shape ``[out_features]``) and initialised
    the same way, so state dicts move between the two unchanged.

    It also replaces torchmultimodal's ``ConcatFusionModule(projection=nn.Linear(...))``: it takes
    a dict of modalities in sorted key order, as that module concatenates them, its constructor
    takes the ``projection`` argument, and :meth:`from_concat_fusion` /
    :meth:`concat_fusion_state_dict` convert the weights (``projection.weight`` <-> ``weight``,
    ``projection.bias`` <-> ``bias``).

    Args:
        in_features: feature size of each input, in the order they are passed to ``forward``; or a
            mapping modality name -> size, the modalities then taken in sorted name order.
        out_features: size of the output features (not with ``projection``).
        bias: whether to learn an additive bias; default True (not with ``projection``).
        activation: one of ``none, relu, gelu, gelu_tanh, silu, sigmoid, tanh``.
        device: device of the parameters (default: the projection's, or the default device).
        dtype: dtype of the parameters (default: the projection's, or the default dtype).
        projection: torchmultimodal's argument: an ``nn.Linear`` over the concatenation whose sizes,
            bias and weights (copied) the layer takes, in place of ``out_features`` and ``bias``.

    TorchScript is not supported (``torch.jit.script`` raises); ``torch.export.export`` and
    ``torch.compile`` are.

    Example:
        >>> layer = ConcatLinear([768, 512, 128], 512, activation="gelu")
        >>> y = layer(image_features, text_features, audio_features)  # [*, 512]
        >>> named = ConcatLinear({"image": 768, "text": 512}, 256)
        >>> y = named({"text": text_features, "image": image_features})  # cat(image, text)
    """

    def __init__(
        self,
        in_features: Sequence[int] | Mapping[str, int],
        out_features: int | None = None,
        bias: bool | None = None,
        activation: str = "none",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        projection: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if isinstance(in_features, Mapping):
            self._named = True
            dims = {str(name): int(size) for name, size in in_features.items()}
            self.modalities: tuple[str, ...] = tuple(sorted(dims))
        elif isinstance(in_features, Sequence) and not isinstance(in_features, str):
            self._named = False
            dims = {str(i): int(size) for i, size in enumerate(in_features)}
            self.modalities = tuple(dims)
        else:
            raise TypeError(
                "in_features: expected a sequence of sizes or a dict name -> size, "
                f"got {type(in_features).__name__}"
            )
        sizes = [dims[m] for m in self.modalities]
        if not sizes or any(d < 0 for d in sizes) or sum(sizes) == 0:
            shown = dims if self._named else sizes
            raise ValueError(f"in_features: expected non-negative sizes with a positive sum, got {shown}")
        linear = (
            None if projection is None else _projection_linear(projection, sum(sizes), out_features, bias)
        )
        if linear is not None:
            out_features = linear.out_features
            bias = linear.bias is not None
            device = linear.weight.device if device is None else device
            dtype = linear.weight.dtype if dtype is None else dtype
        if out_features is None:
            raise TypeError("ConcatLinear: expected out_features (or a projection to take it from)")
        if out_features <= 0:
            raise ValueError(f"out_features: expected a positive size, got {out_features}")
        self.in_features: tuple[int, ...] = tuple(sizes)
        self.out_features = int(out_features)
        self.activation = check_activation(activation)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, sum(sizes), **factory))
        if bias is None or bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        if linear is None:
            self.reset_parameters()
        else:
            with torch.no_grad():
                self.weight.copy_(linear.weight)
                if self.bias is not None:
                    self.bias.copy_(linear.bias)

    def reset_parameters(self) -> None:
        """The initialisation of :class:`torch.nn.Linear` over ``sum(in_features)`` inputs."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1]) if self.weight.shape[1] > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, *inputs: torch.Tensor | ModalityInputs) -> torch.Tensor:
        """``forward(x1, x2, ...)``, ``forward([x1, x2, ...])`` or ``forward({name: x, ...})``;
        returns ``[*, out_features]``.

        A dict is read in sorted key order, as torchmultimodal's ``ConcatFusionModule`` reads it;
        with named ``in_features`` its keys must be exactly those names, and a layer built from a
        list reads the keys ``"0"``, ``"1"``, ... in its own order."""
        return concat_linear(self._ordered(inputs), self.weight, self.bias, self.activation)

    def _ordered(self, inputs: tuple[torch.Tensor | ModalityInputs, ...]) -> list[torch.Tensor]:
        """The arguments of ``forward`` as the list of input tensors in fusion order, checked: each
        a tensor whose last dim is its modality's size (errors name the offending input)."""
        container = inputs[0] if len(inputs) == 1 and not isinstance(inputs[0], torch.Tensor) else None
        count = len(self.in_features)
        if container is None:
            if len(inputs) != count:
                raise ValueError(f"inputs: expected {count} tensors (one per modality), got {len(inputs)}")
            tensors = list(inputs)
        else:
            tensors = ordered_inputs(container, count, self.modalities, names_required=self._named)
        for i, (x, size) in enumerate(zip(tensors, self.in_features)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{self._label(container, i)}: expected a tensor, got {type(x).__name__}")
            if x.dim() == 0 or x.shape[-1] != size:
                raise ValueError(
                    f"{self._label(container, i)}: expected last dim {size}, got shape {list(x.shape)}"
                )
        return tensors

    def _label(self, container: ModalityInputs | None, index: int) -> str:
        """How an error names the input at ``index`` of the fusion order: by its key in a dict."""
        if isinstance(container, Mapping):
            return f"inputs[{mapping_order(container, self.modalities)[index]!r}]"
        return f"inputs[{index}]"

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, in_features: Sequence[int] | Mapping[str, int], activation: str = "none"
    ) -> ConcatLinear:
        """A ConcatLinear sharing nothing with ``linear`` but equal to it: same weights, device, dtype."""
        return cls(in_features, activation=activation, projection=linear)

    @classmethod
    def from_concat_fusion(
        cls,
        module_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
        in_features: Sequence[int] | Mapping[str, int],
        activation: str = "none",
    ) -> ConcatLinear:
        """The ConcatLinear equal to a torchmultimodal ``ConcatFusionModule`` with an ``nn.Linear``
        projection (followed by ``activation``), from the module or from its state dict.

        The state dict keys ``projection.weight`` and ``projection.bias`` (optional) become
        ``weight`` and ``bias``; :meth:`concat_fusion_state_dict` maps them back. The weights are
        copied, keeping their device and dtype.

        Args:
            module_or_state_dict: a module whose ``projection`` is an ``nn.Linear``, or a state dict
                with exactly the keys above.
            in_features: the size of each modality; a dict name -> size, as the module's inputs
                (concatenated in sorted name order), or a list of sizes in that order.
            activation: the activation that follows the module, fused into the layer.
        """
        if isinstance(module_or_state_dict, nn.Module):
            projection = getattr(module_or_state_dict, "projection", None)
            if not isinstance(projection, nn.Module):
                raise TypeError(
                    "module_or_state_dict: expected a ConcatFusionModule (a module with a `projection`), "
                    f"got {type(module_or_state_dict).__name__}"
                )
            return cls(in_features, activation=activation, projection=projection)
        if not isinstance(module_or_state_dict, Mapping):
            raise TypeError(
                "module_or_state_dict: expected a ConcatFusionModule or its state dict, "
                f"got {type(module_or_state_dict).__name__}"
            )
        keys = set(module_or_state_dict)
        if "projection.weight" not in keys or not keys <= set(_CONCAT_FUSION_KEYS):
            raise ValueError(
                "module_or_state_dict: expected the keys ['projection.weight', 'projection.bias'] of a "
                f"ConcatFusionModule with an nn.Linear projection (bias optional), got {sorted(keys)}"
            )
        weight = module_or_state_dict["projection.weight"]
        bias = module_or_state_dict.get("projection.bias")
        if weight.dim() != 2:
            raise ValueError(f"projection.weight: expected [out, in], got shape {list(weight.shape)}")
        layer = cls(
            in_features,
            weight.shape[0],
            bias=bias is not None,
            activation=activation,
            device=weight.device,
            dtype=weight.dtype,
        )
        if weight.shape[1] != sum(layer.in_features):
            raise ValueError(
                f"in_features: sizes sum to {sum(layer.in_features)} but projection.weight "
                f"takes {weight.shape[1]}"
            )
        layer.load_state_dict({_CONCAT_FUSION_KEYS[k]: v for k, v in module_or_state_dict.items()})
        return layer

    def concat_fusion_state_dict(self) -> dict[str, torch.Tensor]:
        """This layer's state dict under the keys of torchmultimodal's ``ConcatFusionModule`` with
        an ``nn.Linear`` projection (``projection.weight``, ``projection.bias``), detached tensors
        sharing this layer's storage, as :meth:`state_dict` returns them."""
        return {f"projection.{key}": value for key, value in self.state_dict().items()}

    def extra_repr(self) -> str:
        dims = dict(zip(self.modalities, self.in_features)) if self._named else list(self.in_features)
        return (
            f"in_features={dims}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.activation!r}"
        )


def _projection_linear(
    projection: nn.Module, in_total: int, out_features: int | None, bias: bool | None
) -> nn.Linear:
    """``projection`` checked as the ``nn.Linear`` over ``in_total`` concatenated features that a
    ConcatLinear can take the place of, given without ``out_features`` or ``bias``."""
    if out_features is not None or bias is not None:
        given = "out_features" if out_features is not None else "bias"
        raise TypeError(f"ConcatLinear: got both {given} and projection (which sets it)")
    if not isinstance(projection, nn.Linear):
        # A wider projection (an MLP, a Linear + norm) is more than one fused GEMM: keep it as is.
        raise TypeError(
            f"projection: ConcatLinear replaces an nn.Linear projection (with its activation fused), "
            f"got {type(projection).__name__}"
        )
    if isinstance(projection, nn.modules.lazy.LazyModuleMixin) and projection.has_uninitialized_params():
        raise ValueError("projection: the lazy Linear has no weights yet; run it once first")
    if projection.in_features != in_total:
        raise ValueError(
            f"in_features: sizes sum to {in_total} but the projection takes {projection.in_features}"
        )
    return projection
