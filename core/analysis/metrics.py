"""Classification metrics from a confusion matrix (the channel-robustness matrix of many runs is
core.analysis.compare.channel_robustness_matrix).

Everything is derived from the confusion matrix (rows = true class, columns = predicted class,
counts), so eval.json can be checked against its own matrix by anyone.
"""

from __future__ import annotations

from typing import Sequence

import torch


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true, predicted) pairs.

    y_true, y_pred: int64 [N] with values in [0, num_classes). Returns int64 [num_classes, num_classes],
    rows true, columns predicted.
    """
    y_true = torch.as_tensor(y_true, dtype=torch.int64).reshape(-1).cpu()
    y_pred = torch.as_tensor(y_pred, dtype=torch.int64).reshape(-1).cpu()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.numel()} labels but y_pred has {y_pred.numel()}")
    for name, t in (("y_true", y_true), ("y_pred", y_pred)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} holds a class outside [0, {num_classes})")
    flat = y_true * num_classes + y_pred
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def classification_report(cm: torch.Tensor | Sequence[Sequence[int]], classes: Sequence[str]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1 from a confusion matrix [K, K].

    A class never predicted has precision 0 (sklearn's ``zero_division=0``); a class absent from the
    test set has recall 0 and support 0 and still counts in the macro mean, as in sklearn.
    Returns {"accuracy", "macro": {precision, recall, f1}, "per_class": [{class, precision, recall,
    f1, support}], "n": total count}.
    """
    cm = torch.as_tensor(cm, dtype=torch.int64)
    k = cm.shape[0]
    if cm.shape != (k, k) or len(classes) != k:
        raise ValueError(f"confusion matrix {tuple(cm.shape)} does not match {len(classes)} classes")
    total = int(cm.sum())
    tp = cm.diag()
    predicted = cm.sum(dim=0)
    support = cm.sum(dim=1)
    per_class = []
    for i, name in enumerate(classes):
        p = _safe_div(tp[i], predicted[i])
        r = _safe_div(tp[i], support[i])
        f1 = _safe_div(2 * p * r, p + r)
        per_class.append({"class": str(name), "precision": p, "recall": r, "f1": f1, "support": int(support[i])})
    macro = {
        key: (sum(row[key] for row in per_class) / k if k else 0.0) for key in ("precision", "recall", "f1")
    }
    return {"accuracy": _safe_div(int(tp.sum()), total), "macro": macro, "per_class": per_class, "n": total}
