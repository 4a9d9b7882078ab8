"""Visual question answering metrics: the classification metrics of the answers, their accuracy per
question type (``shape``, ``color``, ``yes_no`` for easy-VQA) and the number of questions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfast.train.metrics import classification_metrics

# The dataset extra that names each sample's question type (see mmfast.data.easy_vqa).
QUESTION_TYPES_EXTRA = "question_types"


def vqa_metrics(
    labels: np.ndarray, probabilities: np.ndarray, question_types: Sequence[str]
) -> dict[str, Any]:
    """:func:`~mmfast.train.metrics.classification_metrics` of the answers, plus
    ``"accuracy_by_type"`` (question type -> accuracy over the questions of that type, types in
    sorted order) and ``"count"`` (the number of questions).

    Args:
        labels: int ``[N]`` true answers.
        probabilities: float ``[N, C]`` predicted answer probabilities.
        question_types: ``N`` type names, one per question.
    """
    labels = np.asarray(labels)
    if len(question_types) != len(labels):
        raise ValueError(f"question_types: expected {len(labels)} types, got {len(question_types)}")
    metrics = classification_metrics(labels, probabilities)
    correct = np.asarray(probabilities).argmax(axis=1) == labels
    kinds = np.asarray(list(question_types))
    metrics["accuracy_by_type"] = {
        str(kind): float(correct[kinds == kind].mean()) for kind in sorted(set(question_types))
    }
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
