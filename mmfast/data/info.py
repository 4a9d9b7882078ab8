"""`DatasetInfo`: what a model needs to know about a dataset to build its encoders and head."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class DatasetInfo:
    """Modalities, classes and per-modality input sizes of a dataset.

    Attributes:
        name: dataset name (as given to :func:`mmfast.data.load_dataset`).
        modalities: modality names present in every sample, sorted.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        class_names: a readable name per class.
        image_shape: ``(C, H, W)`` of the ``"image"`` tensors, if the dataset has images.
        audio_features: feature size ``F`` of the ``"audio"`` frames ``[T, F]``, if it has audio.
        vocab_size: number of token ids of ``"text"`` (special tokens included), if it has text.
        pad_id: the token id used for padding text.
        max_audio_frames: longest audio sequence (frames) in the dataset, if it has audio.
        max_text_length: longest token sequence in the dataset, if it has text.
        options: the dataset options these sizes are for.
    """

    name: str
    modalities: tuple[str, ...]
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None = None
    audio_features: int | None = None
    vocab_size: int | None = None
    pad_id: int = 0
    max_audio_frames: int | None = None
    max_text_length: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(sorted(self.modalities)) != tuple(self.modalities) or not self.modalities:
            raise ValueError(f"modalities: expected a non-empty sorted tuple, got {self.modalities}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names: expected {self.num_classes} names, got {len(self.class_names)}")
        needs = {"image": self.image_shape, "audio": self.audio_features, "text": self.vocab_size}
        for modality, size in needs.items():
            if modality in self.modalities and size is None:
                raise ValueError(f"{modality}: the dataset has this modality but its input size is missing")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable with JSON-serialisable options), e.g. for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetInfo:
        """The inverse of :meth:`to_dict` (lists from JSON become tuples again)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"data: unknown DatasetInfo fields {sorted(unknown)}")
        values = dict(data)
        for key in ("modalities", "class_names", "image_shape"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        values["options"] = dict(values.get("options", {}))
        return cls(**values)
