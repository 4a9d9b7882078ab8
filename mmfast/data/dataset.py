"""`MultimodalDataset`: an in-memory dataset of modality -> tensor samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from mmfast.data.info import DatasetInfo


class MultimodalDataset(Dataset):
    """Samples ``{"<modality>": tensor, ..., "label": int64 scalar}`` held in memory.

    Args:
        inputs: per modality, one tensor per sample (``image`` ``[C, H, W]``, ``audio`` ``[T, F]``,
            ``text`` ``[L]``); or a stacked tensor whose first dimension indexes the samples.
        labels: int64 ``[N]``.
        info: the dataset's :class:`DatasetInfo`.
        source_ids: per modality, int64 ``[N]`` index of each sample's item in its source
            collection (e.g. which recording, which image), so that splits can be checked for overlap.
        extras: further per-sample annotations that are not model inputs (e.g. the class each
            synthetic modality shows), kept as ``dataset.extras``.
    """

    def __init__(
        self,
        inputs: Mapping[str, Sequence[torch.Tensor] | torch.Tensor],
        labels: torch.Tensor,
        info: DatasetInfo,
        source_ids: Mapping[str, torch.Tensor] | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        if labels.dim() != 1 or labels.dtype != torch.int64:
            raise ValueError(f"labels: expected int64 [N], got {labels.dtype} {list(labels.shape)}")
        for modality, values in inputs.items():
            if len(values) != len(labels):
                raise ValueError(f"inputs[{modality!r}]: expected {len(labels)} samples, got {len(values)}")
        if tuple(sorted(inputs)) != info.modalities:
            raise ValueError(f"inputs: expected modalities {info.modalities}, got {tuple(sorted(inputs))}")
        self.inputs = dict(inputs)
        self.labels = labels
        self.info = info
        self.source_ids = {k: v.clone() for k, v in (source_ids or {}).items()}
        self.extras = dict(extras or {})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = {modality: values[index] for modality, values in self.inputs.items()}
        sample["label"] = self.labels[index]
        return sample
