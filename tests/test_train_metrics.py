"""Classification metrics against values worked out by hand, and the learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmfast.train.metrics import classification_metrics
from mmfast.train.schedule import warmup_cosine


def _one_hot_scores(predictions: list[int], classes: int) -> np.ndarray:
    scores = np.full((len(predictions), classes), 0.1)
    scores[np.arange(len(predictions)), predictions] = 0.8
    return scores


def test_metrics_of_a_small_three_class_case() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    metrics = classification_metrics(labels, _one_hot_scores([0, 1, 1, 1, 2, 0], 3))
    # Per class: precision 1/2, 2/3, 1; recall 1/2, 1, 1/2; F1 1/2, 4/5, 2/3.
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert metrics["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_roc_auc_ranks_the_probabilities() -> None:
    # Class 1 scores 0.1, 0.4 (negatives) against 0.35, 0.8 (positives): 3 of 4 pairs ordered.
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.stack([1 - p1, p1], axis=1))
    assert metrics["roc_auc"] == pytest.approx(0.75)
    perfect = classification_metrics(np.array([0, 1, 2]), _one_hot_scores([0, 1, 2], 3))
    assert perfect["roc_auc"] == pytest.approx(1.0)
    assert perfect["accuracy"] == perfect["f1_macro"] == 1.0


def test_roc_auc_is_nan_when_a_class_is_absent_and_precision_counts_it_as_zero() -> None:
    metrics = classification_metrics(np.array([0, 0, 1]), _one_hot_scores([0, 0, 1], 3))
    assert math.isnan(metrics["roc_auc"])
    assert metrics["recall_macro"] == pytest.approx(2 / 3)  # class 2: no samples, recall 0
    assert metrics["confusion_matrix"][2] == [0, 0, 0]


@pytest.mark.parametrize(
    ("labels", "scores"),
    [(np.zeros(3), np.ones((2, 2))), (np.zeros((3, 1)), np.ones((3, 2))), (np.zeros(0), np.ones((0, 2)))],
)
def test_metrics_refuse_mismatched_inputs(labels, scores) -> None:
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(labels, scores)


def test_warmup_then_cosine_to_zero() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=10, warmup_ratio=0.2)
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])  # two warm-up steps, then the peak
    assert rates[2:] == sorted(rates[2:], reverse=True)
    assert rates[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0)
