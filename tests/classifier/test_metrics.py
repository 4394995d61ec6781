import numpy as np
import pytest

from classifier.metrics import compute_metrics, roc_auc


def test_prohibited_vs_rest_counts_and_ratios():
    labels = ["ok", "weapon", "drug"]
    truth = ["ok", "ok", "weapon", "drug", "weapon", "ok"]
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # ok -> allowed (TN)
            [0.2, 0.7, 0.1],  # ok -> weapon (FP)
            [0.1, 0.8, 0.1],  # weapon -> weapon (TP)
            [0.2, 0.5, 0.3],  # drug -> weapon: wrong label but still prohibited (TP)
            [0.6, 0.3, 0.1],  # weapon -> ok (FN)
            [0.7, 0.2, 0.1],  # ok -> ok (TN)
        ]
    )
    m = compute_metrics(truth, probs, labels, ["weapon", "drug"])
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["labels"] == ["allowed", "prohibited"]
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["label_accuracy"] == pytest.approx(3 / 6)
    assert m["label_confusion_matrix"][3 - 3] == [2, 1, 0]
    assert m["per_label"]["weapon"]["recall"] == pytest.approx(1 / 2)
    assert m["per_label"]["drug"]["recall"] == 0.0
    assert m["per_label"]["drug"]["prohibited"] is True


def test_threshold_uses_summed_prohibited_probability():
    labels = ["ok", "weapon", "drug"]
    probs = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    by_argmax = compute_metrics(["weapon", "ok"], probs, labels, ["weapon", "drug"])
    by_threshold = compute_metrics(["weapon", "ok"], probs, labels, ["weapon", "drug"], threshold=0.5)
    assert by_argmax["recall"] == 0.0
    assert by_threshold["recall"] == 1.0
    assert by_threshold["specificity"] == 1.0


def test_auc_matches_pairwise_definition_with_ties():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    positive = np.array([0, 0, 1, 1, 1], dtype=bool)
    pairs = [(p, n) for p in scores[positive] for n in scores[~positive]]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(positive, scores) == pytest.approx(expected)
    assert roc_auc(np.array([True, True]), np.array([0.1, 0.2])) is None


def test_undefined_ratios_are_none_and_unknown_labels_rejected():
    m = compute_metrics(["ok", "ok"], [[0.9, 0.1], [0.8, 0.2]], ["ok", "bad"], ["bad"])
    assert m["precision"] is None and m["recall"] is None and m["auc"] is None
    assert m["specificity"] == 1.0
    with pytest.raises(ValueError, match="unknown|not among"):
        compute_metrics(["cat"], [[0.5, 0.5]], ["ok", "bad"], ["bad"])
