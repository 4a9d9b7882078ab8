"""Visual question answering metrics: the classification metrics of the answers, their accuracy per
question type (``shape``, ``color``, ``yes_no`` for easy-VQA; ``relational``, ``non_relational``
for Sort-of-CLEVR, and its finer subtypes) and the number of questions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfast.train.metrics import classification_metrics

# The dataset extra that names each sample's question type (see mmfast.data.easy_vqa), and the
# optional one with finer subtypes (see mmfast.data.sort_of_clevr).
QUESTION_TYPES_EXTRA = "question_types"
QUESTION_SUBTYPES_EXTRA = "question_subtypes"


def _accuracy_by(correct: np.ndarray, names: Sequence[str], what: str) -> dict[str, float]:
    if len(names) != len(correct):
        raise ValueError(f"{what}: expected {len(correct)} names, got {len(names)}")
    kinds = np.asarray(list(names))
    return {str(kind): float(correct[kinds == kind].mean()) for kind in sorted(set(names))}


def vqa_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    question_types: Sequence[str],
    question_subtypes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`~mmfast.train.metrics.classification_metrics` of the answers, plus
    ``"accuracy_by_type"`` (question type -> accuracy over the questions of that type, types in
    sorted order), ``"accuracy_by_subtype"`` likewise when ``question_subtypes`` are given, and
    ``"count"`` (the number of questions).

    Args:
        labels: int ``[N]`` true answers.
        probabilities: float ``[N, C]`` predicted answer probabilities.
        question_types: ``N`` type names, one per question.
        question_subtypes: ``N`` finer type names (Sort-of-CLEVR's ``closest``, ``count``...).
    """
    labels = np.asarray(labels)
    if len(question_types) != len(labels):
        raise ValueError(f"question_types: expected {len(labels)} types, got {len(question_types)}")
    metrics = classification_metrics(labels, probabilities)
    correct = np.asarray(probabilities).argmax(axis=1) == labels
    metrics["accuracy_by_type"] = _accuracy_by(correct, question_types, "question_types")
    if question_subtypes is not None:
        metrics["accuracy_by_subtype"] = _accuracy_by(correct, question_subtypes, "question_subtypes")
    metrics["count"] = int(len(labels))
    return metrics


def question_types_of(dataset: Any) -> list[str]:
    """The question type of each sample of a VQA dataset (``dataset.extras["question_types"]``)."""
    extras = getattr(dataset, "extras", {})
    if QUESTION_TYPES_EXTRA not in extras:
        raise ValueError(
            f"dataset: a VQA dataset names each question's type in extras[{QUESTION_TYPES_EXTRA!r}]"
        )
    return list(extras[QUESTION_TYPES_EXTRA])


def question_subtypes_of(dataset: Any) -> list[str] | None:
    """The finer question subtype of each sample (``dataset.extras["question_subtypes"]``), or None
    when the dataset names none."""
    extras = getattr(dataset, "extras", {})
    subtypes = extras.get(QUESTION_SUBTYPES_EXTRA)
    return None if subtypes is None else list(subtypes)
