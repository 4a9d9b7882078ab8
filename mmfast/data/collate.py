"""`collate`: a list of samples (modality -> tensor dicts) to one padded batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mmfast.data.padding import pad_sequences

# Modalities whose samples vary in length along their first dimension, and their padding value.
SEQUENCE_PADDING: dict[str, float] = {"text": 0, "audio": 0.0}
LABEL_KEY = "label"


def collate(
    samples: Sequence[Mapping[str, torch.Tensor]], *, padding_values: Mapping[str, float] | None = None
) -> dict[str, torch.Tensor]:
    """Batch samples: sequence modalities are padded, everything else is stacked.

    Each sample maps modality names to tensors (``"image"``: ``[C, H, W]``, ``"audio"``: ``[T, F]``,
    ``"text"``: ``[L]`` int64) and ``"label"`` to an int64 scalar. Sequence modalities (``text`` and
    ``audio``, or the keys of ``padding_values``) are padded to the longest in the batch and get an
    int64 ``"<modality>_lengths"`` ``[B]`` entry; other tensors, labels included, are stacked.

    Args:
        samples: at least one sample; all with the same keys.
        padding_values: padding value per sequence modality (default: ``SEQUENCE_PADDING``: 0 for
            ``text``, i.e. ``<pad>``, and 0.0 for ``audio``).
    """
    if len(samples) == 0:
        raise ValueError("samples: expected at least one sample, got an empty list")
    padding = dict(SEQUENCE_PADDING if padding_values is None else padding_values)
    keys = list(samples[0].keys())
    for i, sample in enumerate(samples):
        if set(sample.keys()) != set(keys):
            raise ValueError(f"samples[{i}]: expected keys {sorted(keys)}, got {sorted(sample.keys())}")
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        if key in padding:
            batch[key], batch[f"{key}_lengths"] = pad_sequences(values, padding_value=padding[key])
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(
                f"samples[*][{key!r}]: expected equal shapes to stack, got {sorted(shapes)}; "
                "pass padding_values to pad it as a sequence"
            )
        batch[key] = torch.stack(values)
    return batch
