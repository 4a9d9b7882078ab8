"""Classification metrics, computed with scikit-learn."""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

METRIC_NAMES = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, object]:
    """Accuracy, macro precision / recall / F1, one-vs-rest ROC-AUC and the confusion matrix.

    Args:
        labels: int ``[N]`` true classes.
        probabilities: float ``[N, C]`` predicted class probabilities (rows sum to 1).

    Returns:
        ``{"accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"}`` as floats (ROC-AUC
        is NaN when it is undefined, e.g. a class missing from ``labels``) and ``"confusion_matrix"``
        as a ``C x C`` list of lists (rows: true class, columns: predicted).
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 1 or probabilities.ndim != 2 or len(labels) != len(probabilities):
        raise ValueError(
            f"labels, probabilities: expected [N] and [N, C], got {labels.shape} and {probabilities.shape}"
        )
    if len(labels) == 0:
        raise ValueError("labels: expected at least one sample")
    classes = np.arange(probabilities.shape[1])
    predictions = probabilities.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=classes, average="macro", zero_division=0
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            # Rows renormalised: float32 softmax rows may sum to 1 only within rounding.
            scores = probabilities / probabilities.sum(axis=1, keepdims=True)
            if len(classes) == 2:
                # scikit-learn takes the positive class's score for two classes, not an OvR matrix.
                roc_auc = float(roc_auc_score(labels, scores[:, 1]))
            else:
                roc_auc = float(roc_auc_score(labels, scores, multi_class="ovr", labels=classes))
    except ValueError:
        roc_auc = math.nan
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "roc_auc": roc_auc,
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }
