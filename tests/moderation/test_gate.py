"""The promotion gate: candidate against the active model on the frozen holdout, promote only if not worse."""

import pytest

from moderation.models import GateMetric, ModelVersion, TrainingRunStatus, TrainingTrigger
from moderation.selectors.settings import get_settings
from moderation.services import training
from moderation.services.model_versions import get_registry
from tests.moderation.training_fixtures import (
    add_holdout,
    import_initial_set,
    loop_settings_fixture,  # noqa: F401 (fixture)
    rescores_fixture,  # noqa: F401 (fixture)
    shuffle_training_labels,
)


def run_now(trigger=TrainingTrigger.MANUAL):
    return training.execute_training_run(training.request_training(trigger, dispatch=False).pk)


@pytest.mark.parametrize(
    ("candidate", "active", "metric", "promote", "words"),
    [
        ({"recall": 0.9, "precision": 0.9}, {"recall": 0.8, "precision": 0.9}, GateMetric.RECALL, True, "promoted"),
        ({"recall": 0.8, "precision": 0.9}, {"recall": 0.8, "precision": 0.9}, GateMetric.RECALL, True, "promoted"),
        ({"recall": 0.7, "precision": 1.0}, {"recall": 0.8, "precision": 0.9}, GateMetric.RECALL, False, "Recall"),
        ({"recall": 0.9, "precision": 0.89}, {"recall": 0.8, "precision": 0.9}, GateMetric.RECALL, True, "promoted"),
        ({"recall": 1.0, "precision": 0.85}, {"recall": 0.8, "precision": 0.9}, GateMetric.RECALL, False, "margin"),
        ({"recall": 1.0, "precision": None}, {"recall": 0.8, "precision": 0.9}, GateMetric.RECALL, False, "margin"),
        ({"f1": 0.7}, {"f1": 0.8}, GateMetric.F1, False, "f1"),
        ({"accuracy": 0.81}, {"accuracy": 0.8}, GateMetric.ACCURACY, True, "accuracy"),
    ],
)
def test_compare_on_gate(candidate, active, metric, promote, words):
    decided, reason = training.compare_on_gate(candidate, active, metric, margin=0.02)
    assert decided is promote
    assert words in reason


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_a_candidate_trained_on_shuffled_labels_is_rejected_and_the_active_model_stays(tmp_path, rescores):
    import_initial_set(tmp_path, per_label=30, fashion=True)
    add_holdout(per_label=30, fashion=True)
    first = run_now(TrainingTrigger.INITIAL)
    assert first.status == TrainingRunStatus.SUCCEEDED
    assert first.gate["candidate"]["recall"] >= 0.7  # the first model's holdout figures are recorded too

    shuffle_training_labels()
    run = run_now()
    assert run.status == TrainingRunStatus.REJECTED, run.gate
    assert run.model_version == "v0002" and run.reason == run.gate["reason"]
    assert run.gate["active"]["n"] == run.gate["candidate"]["n"] == 60
    assert run.gate["holdout_counts"] == {"bad": 30, "ok": 30}
    assert ModelVersion.objects.get(is_active=True).version == "v0001"
    assert ModelVersion.objects.get(version="v0002").is_active is False
    assert get_registry().active_version() == "v0001"
    assert rescores == ["rescore"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_a_candidate_as_good_as_the_active_one_is_promoted_with_the_comparison_recorded(tmp_path, rescores):
    import_initial_set(tmp_path, per_label=12)
    add_holdout(per_label=10)
    run_now(TrainingTrigger.INITIAL)
    run = run_now()
    assert run.status == TrainingRunStatus.SUCCEEDED, run.gate
    assert run.gate["active_version"] == "v0001" and run.gate["candidate_version"] == "v0002"
    assert run.gate["candidate"]["recall"] >= run.gate["active"]["recall"]
    assert run.gate["threshold"] == get_settings().threshold_for("bad")
    assert ModelVersion.objects.get(is_active=True).version == "v0002"
    assert get_registry().active_version() == "v0002"
    assert rescores == ["rescore", "rescore"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_too_small_a_holdout_rejects_the_candidate_with_the_reason(tmp_path, rescores):
    import_initial_set(tmp_path, per_label=8)
    add_holdout(per_label=3)
    run_now(TrainingTrigger.INITIAL)
    run = run_now()
    assert run.status == TrainingRunStatus.REJECTED
    assert "Not enough holdout examples" in run.reason and "/10" in run.reason
    assert run.gate["holdout_counts"] == {"bad": 3, "ok": 3}
    assert get_registry().active_version() == "v0001"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_a_small_holdout_is_extended_with_test_split_images_neither_model_trained_on(tmp_path, rescores):
    import json

    import_initial_set(tmp_path, per_label=24)
    add_holdout(per_label=3)
    settings_row = get_settings()
    settings_row.gate_min_holdout_per_label = 6
    settings_row.save()
    run_now(TrainingTrigger.INITIAL)
    run = run_now()
    registry = get_registry()
    candidate_test = set(json.loads((registry.path("v0002") / "manifest.json").read_text())["test"])
    active = json.loads((registry.path("v0001") / "manifest.json").read_text())
    unseen = candidate_test - set(active["train"]) - set(active["validation"])
    assert run.gate["extended_with_test_split"] == len(unseen) > 0
    assert sum(run.gate["evaluation_counts"].values()) == 6 + len(unseen) == run.gate["candidate"]["n"]
    assert run.status == TrainingRunStatus.SUCCEEDED and "unseen test-split images" in run.reason


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_the_gate_scores_both_models_on_the_weighted_holdout(tmp_path, rescores):
    from moderation.models import TrainingExample

    import_initial_set(tmp_path, per_label=12)
    add_holdout(per_label=10)
    # As if every allowed holdout image had come from an audit at a 20% rate: each stands for five images.
    TrainingExample.objects.filter(is_holdout=True, label="ok").update(weight=5.0)
    run_now(TrainingTrigger.INITIAL)
    run = run_now()
    assert run.gate["weighted_total"] == 60.0
    assert run.gate["holdout_counts"] == {"bad": 10, "ok": 10}
    for side in ("candidate", "active"):
        figures = run.gate[side]
        assert figures["n"] == 20 and figures["weighted_n"] == pytest.approx(60.0)
        (tn, fp), (fn, tp) = figures["confusion_matrix"]
        assert tn + fp == pytest.approx(50.0) and fn + tp == pytest.approx(10.0)
        assert fp % 5 == 0 and tn % 5 == 0  # allowed images count five times each


def test_training_weights_are_scaled_to_average_one_keeping_their_ratios():
    from classifier.data import Example

    examples = [Example(sha256=str(i), label="ok", weight=w) for i, w in enumerate([1.0, 1.0, 10.0, 0.0])]
    scaled = training._mean_one(examples)
    assert [e.weight for e in scaled] == pytest.approx([1 / 3, 1 / 3, 10 / 3, 0.0])
    assert [e.sha256 for e in scaled] == ["0", "1", "2", "3"]
    assert training._mean_one([]) == []
