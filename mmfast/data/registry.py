"""`load_dataset` / `dataset_info`: the datasets by name."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from mmfast.data import av_digits, easy_vqa, scenes, sort_of_clevr, synthetic
from mmfast.data.info import DatasetInfo

_DATASETS = {
    av_digits.NAME: av_digits,
    easy_vqa.NAME: easy_vqa,
    scenes.NAME: scenes,
    sort_of_clevr.NAME: sort_of_clevr,
    synthetic.NAME: synthetic,
}
DATASET_NAMES: tuple[str, ...] = tuple(sorted(_DATASETS))


def _module(name: str):
    if name not in _DATASETS:
        raise ValueError(f"name: expected one of {', '.join(DATASET_NAMES)}, got {name!r}")
    return _DATASETS[name]


def load_dataset(name: str, split: str, *, seed: int = 0, **options: Any) -> Dataset:
    """One split of a dataset: samples ``{"<modality>": tensor, ..., "label": int64 scalar}``.

    Args:
        name: ``"av-digits"`` (spoken + handwritten digits, real data; see
            :mod:`mmfast.data.av_digits`) or ``"synthetic"`` (image + text + audio with a
            controllable difficulty; see :mod:`mmfast.data.synthetic`) or ``"scenes"`` (generated
            images of coloured shapes with captions, for retrieval; see :mod:`mmfast.data.scenes`)
            or ``"easy-vqa"`` (questions about images of a coloured shape, 13 answers, from the
            ``easy-vqa`` package; see :mod:`mmfast.data.easy_vqa`) or ``"sort-of-clevr"``
            (generated relational and non-relational questions about six coloured squares and
            circles, 10 answers; see :mod:`mmfast.data.sort_of_clevr`).
        split: ``"train"``, ``"val"`` or ``"test"``; the three never share a sample.
        seed: fixes the split (and, for ``synthetic`` and ``sort-of-clevr``, the data): same seed,
            same tensors.
        options: dataset options (av-digits: ``image_size``, ``corrupt_images``,
            ``corruption_strength``, ``normalize_audio``; synthetic: ``num_samples``,
            ``num_classes``, ``difficulty``, ``image_size``, ``n_mels``; scenes and easy-vqa:
            ``num_train``, ``num_val``, ``num_test``, ``image_size``; sort-of-clevr likewise, and
            ``flips``: random flips of the training images).

    Batch the samples with :func:`mmfast.data.collate`.
    """
    return _module(name).load(split, seed=seed, **options)


def dataset_info(name: str, **options: Any) -> DatasetInfo:
    """Modalities, classes and input sizes of dataset ``name`` with these options."""
    return _module(name).info(**options)


def has_seeded_test_set(name: str) -> bool:
    """Whether dataset ``name`` generates its test set from the seed, so that another seed gives a
    fresh test set (``mmfast evaluate --data-seed``); datasets read from files have a fixed one."""
    return bool(getattr(_module(name), "SEEDED_TEST_SET", False))
