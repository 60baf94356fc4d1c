import pytest
import torch

from core.analysis.metrics import classification_report, confusion_matrix


def test_confusion_matrix_and_report_match_hand_computation():
    y_true = torch.tensor([0, 0, 0, 1, 1, 2])
    y_pred = torch.tensor([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    r = classification_report(cm, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    a, b, c = r["per_class"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert b["precision"] == 0.5 and b["recall"] == 0.5 and b["f1"] == 0.5
    assert c["precision"] == 0.5 and c["recall"] == 1.0 and c["f1"] == pytest.approx(2 / 3)
    assert r["macro"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_never_predicted_and_absent_classes_are_zero_not_nan():
    cm = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 0]), 2)
    r = classification_report(cm, ["x", "y"])
    assert r["per_class"][1] == {"class": "y", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["macro"]["f1"] == 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="does not match"):
        classification_report(torch.zeros(2, 2), ["a", "b", "c"])
