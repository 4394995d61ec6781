"""The promotion gate: candidate against the active model on the frozen holdout, promote only if not worse."""

import json

import pytest

from moderation.models import GateMetric, ModelVersion, TrainingRunStatus, TrainingTrigger
from moderation.selectors.settings import get_settings
from moderation.services.model_versions import get_registry
from moderation.services.training.dataset import mean_one
from moderation.services.training.gate import compare_on_gate
from moderation.services.training.runs import execute_training_run
from moderation.services.training.trigger import request_training
from tests.support.factories import add_holdout, import_initial_set, shuffle_training_labels


def run_now(trigger=TrainingTrigger.MANUAL):
    return execute_training_run(run_id=request_training(trigger=trigger, dispatch=False).pk)


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
    decided, reason = compare_on_gate(candidate, active, metric, margin=0.02)
    assert decided is promote
    assert words in reason


@pytest.mark.parametrize(
    ("allowance", "promote", "words"),
    [(0.0, False, "fell from 0.800 to 0.780."), (0.03, True, "within the 0.030"), (0.01, False, "more than the 0.010")],
)
def test_a_recall_drop_within_the_holdouts_noise_counts_as_no_worse(allowance, promote, words):
    decided, reason = compare_on_gate(
        {"recall": 0.78, "precision": 0.9}, {"recall": 0.8, "precision": 0.9}, GateMetric.RECALL, 0.02, allowance
    )
    assert decided is promote
    assert words in reason


def test_with_noise_allowed_a_candidate_that_ranks_worse_is_rejected_even_with_recall_and_precision_fine():
    flags_everything = {"recall": 1.0, "precision": 0.72, "auc": 0.55}
    active = {"recall": 0.93, "precision": 0.78, "auc": 0.91}
    decided, reason = compare_on_gate(flags_everything, active, GateMetric.RECALL, 0.1, 0.1, auc_allowance=0.08)
    assert not decided and "ROC AUC on the holdout fell from 0.910 to 0.550" in reason
    assert compare_on_gate(flags_everything, active, GateMetric.RECALL, 0.1, 0.1)[0]


@pytest.mark.slow
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
    assert run.status == TrainingRunStatus.REJECTED, json.dumps(run.gate)
    assert run.model_version == "v0002" and run.reason == run.gate["reason"]
    assert run.gate["active"]["n"] == run.gate["candidate"]["n"] == 60
    assert run.gate["holdout_counts"] == {"bad": 30, "ok": 30}
    assert ModelVersion.objects.get(is_active=True).version == "v0001"
    assert ModelVersion.objects.get(version="v0002").is_active is False
    assert get_registry().active_version() == "v0001"
    assert rescores == ["rescore"]


@pytest.mark.slow
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
    # Platform retrains refit only the output biases with the decisions' weights (PLATFORM_TRAINING_HPARAMS).
    assert get_registry().hparams("v0002").example_weighting == "bias"
    # The paired recall change and its noise are recorded beside the verdict they informed.
    assert run.gate["tolerance"] == get_settings().gate_tolerance == 2.0
    assert run.gate["recall_change_se"] >= 0 and run.gate["precision_change_se"] >= 0
    assert run.gate["recall_change"] == pytest.approx(run.gate["candidate"]["recall"] - run.gate["active"]["recall"])
    assert ModelVersion.objects.get(is_active=True).version == "v0002"
    assert get_registry().active_version() == "v0002"
    assert rescores == ["rescore", "rescore"]


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_a_small_holdout_is_extended_with_test_split_images_neither_model_trained_on(tmp_path, rescores, settings):

    # The command line's 30% test split, so there are enough unseen test-split images to extend with.
    settings.VIGIA_TRAINING_HPARAMS = {**settings.VIGIA_TRAINING_HPARAMS, "test_share": 0.3}
    import_initial_set(tmp_path, per_label=24)
    add_holdout(per_label=3)
    settings_row = get_settings()
    settings_row.gate_min_holdout_per_label = 6
    settings_row.save()
    run_now(TrainingTrigger.INITIAL)
    run = run_now()
    registry = get_registry()
    candidate_test = set(registry.manifest("v0002")["test"])
    active = registry.manifest("v0001")
    unseen = candidate_test - set(active["train"]) - set(active["validation"])
    assert run.gate["extended_with_test_split"] == len(unseen) > 0
    assert sum(run.gate["evaluation_counts"].values()) == 6 + len(unseen) == run.gate["candidate"]["n"]
    assert run.status == TrainingRunStatus.SUCCEEDED and "unseen test-split images" in run.reason


@pytest.mark.slow
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
    scaled = mean_one(examples)
    assert [e.weight for e in scaled] == pytest.approx([1 / 3, 1 / 3, 10 / 3, 0.0])
    assert [e.sha256 for e in scaled] == ["0", "1", "2", "3"]
    assert mean_one([]) == []
