"""Seeded, stratified train / val / test splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    return split


def stratified_split(
    labels: np.ndarray, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, np.ndarray]:
    """Indices of each split, class by class in the given proportions; disjoint and covering all.

    Within a class the items are shuffled by ``seed``; the first ``round(f_train * n)`` go to train,
    the next ``round(f_val * n)`` to val and the rest to test. Each split's indices are sorted.
    """
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"fractions: expected {len(SPLITS)} non-negative values summing to 1, got {fractions}"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, None)}
        for split, (start, stop) in bounds.items():
            parts[split].append(members[start:stop])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}
