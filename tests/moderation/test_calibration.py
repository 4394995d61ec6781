"""Thresholds from targets: a holdout with a known answer, auto-action off when the bound cannot be met, and
recalibration on every promotion and rollback (pinned labels kept)."""

import pytest

from moderation.models import AuditAction, AuditEntry, ModelVersion, TrainingExample, TrainingRunStatus, TrainingTrigger
from moderation.selectors.settings import get_settings
from moderation.services import model_versions
from moderation.services.calibration import recalibrate
from moderation.services.thresholds import (
    derive,
    flagged_share,
    label_view,
    min_violations_for_recall,
    volume_matched,
    wilson_lower_bound,
)
from moderation.services.training.runs import execute_training_run
from moderation.services.training.trigger import request_training
from tests.support.factories import add_holdout, import_initial_set


def holdout(*bands):
    """(score, is_violation, count, weight) bands as derive() takes them."""
    scores, positive, weights = [], [], []
    for score, is_violation, count, weight in bands:
        scores += [score] * count
        positive += [is_violation] * count
        weights += [weight] * count
    return {"scores": scores, "positive": positive, "weights": weights}


def test_wilson_lower_bound_known_values():
    assert wilson_lower_bound(100, 100) == pytest.approx(100 / (100 + 1.6448536269514722**2))
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(50, 100) < 0.5 < wilson_lower_bound(60, 100) + 0.1


def test_thresholds_from_a_holdout_with_a_known_answer():
    # 1000 violations at 0.9, 20 allowed photos at 0.8, 100 violations at 0.5, 1000 allowed photos at 0.1.
    data = holdout((0.9, True, 1000, 1.0), (0.8, False, 20, 1.0), (0.5, True, 100, 1.0), (0.1, False, 1000, 1.0))
    derived = derive(**data, precision_target=0.99, recall_target=0.95)
    # At >= 0.9 precision is 1 on 1000 (bound 0.9973); at >= 0.8 it is 1000/1020 = 0.980: below the target.
    assert derived.auto == 0.9
    assert derived.precision_bound_at_auto == pytest.approx(1000 / (1000 + 1.6448536269514722**2))
    # 1000/1100 = 0.909 of the violations are above 0.8; 0.95 needs the band at 0.5.
    assert derived.review == 0.5 and derived.recall_at_review == 1.0


def test_the_bound_is_taken_on_effective_counts_of_the_weighted_holdout():
    # Two allowed photos at 0.8: unweighted the bound still holds down to 0.5 (1100 / 1102, n 1102) ...
    bands = [(0.9, True, 1000, 1.0), (0.8, False, 2, 1.0), (0.5, True, 100, 1.0), (0.1, False, 1000, 1.0)]
    assert derive(**holdout(*bands), precision_target=0.99, recall_target=0.95).auto == 0.5
    # ... but as audit items that each stand for 10 photos they cost 20, and only the band at 0.9 is safe.
    bands[1] = (0.8, False, 2, 10.0)
    assert derive(**holdout(*bands), precision_target=0.99, recall_target=0.95).auto == 0.9


def test_auto_action_is_off_with_the_reason_when_the_bound_cannot_be_met():
    # Perfect on 100 violations: the point estimate is 1.0, the 95% bound only 0.974.
    derived = derive(
        **holdout((0.95, True, 100, 1.0), (0.2, False, 300, 1.0)), precision_target=0.99, recall_target=0.95
    )
    assert derived.auto is None and derived.review == 0.95
    assert "cannot support precision 0.990" in derived.auto_reason and "0.9737" in derived.auto_reason
    empty = derive(scores=[], positive=[], weights=[], precision_target=0.99, recall_target=0.95)
    assert empty.auto is None and empty.review is None and "no examples" in empty.auto_reason


def test_the_review_threshold_waits_for_enough_violations_to_allow_a_miss():
    assert [min_violations_for_recall(target) for target in (0.95, 0.9, 0.99, 1.0)] == [20, 10, 100, 1]
    # 18 violations scored high and one odd one at 0.006: meeting 0.95 on 19 means catching the odd one too.
    few = holdout((0.95, True, 18, 1.0), (0.006, True, 1, 1.0), (0.3, False, 200, 1.0), (0.001, False, 100, 1.0))
    derived = derive(**few, precision_target=0.99, recall_target=0.95)
    assert derived.review is None
    assert "19 effective violations" in derived.review_reason and "at least 20" in derived.review_reason
    # One more violation and the target may miss the odd one: the threshold is the high band's.
    enough = holdout((0.95, True, 19, 1.0), (0.006, True, 1, 1.0), (0.3, False, 200, 1.0), (0.001, False, 100, 1.0))
    assert derive(**enough, precision_target=0.99, recall_target=0.95).review == 0.95
    # Audit weights count by Kish's effective number: 20 violations of which 5 weigh 10 are about 8.5.
    weighted = holdout((0.95, True, 15, 1.0), (0.5, True, 5, 10.0), (0.1, False, 100, 1.0))
    assert derive(**weighted, precision_target=0.99, recall_target=0.95).review is None


def test_a_label_sees_its_own_violations_against_the_allowed_side():
    scores, positive, weights = label_view(
        label="gun",
        prohibited=["gun", "knife"],
        labels=["gun", "knife", "ok"],
        scores=[0.9, 0.8, 0.1],
        weights=[1, 1, 5],
    )
    assert (scores, positive, weights) == ([0.9, 0.1], [True, False], [1.0, 5.0])


def version_with(name, bands, active=False):
    data = holdout(*bands)
    labels = ["bad" if is_violation else "ok" for is_violation in data["positive"]]
    return ModelVersion.objects.create(
        version=name, labels=["bad", "ok"], prohibited_labels=["bad"], is_active=active,
        holdout_scores={"keys": [f"k{i}" for i in range(len(labels))], "labels": labels, "scores": data["scores"],
                        "weights": data["weights"]},
    )  # fmt: skip


class FakeRegistry:
    """The registry pointer only: activation writes it; these versions live in the database."""

    def __init__(self):
        self.active = None

    def activate(self, version):
        self.active = version

    def versions(self):
        return []


@pytest.mark.django_db
def test_activation_recalibrates_and_a_rollback_restores_the_versions_own_thresholds(monkeypatch):
    monkeypatch.setattr(model_versions, "get_registry", FakeRegistry)
    version_with("v0001", [(0.9, True, 1000, 1.0), (0.3, True, 100, 1.0), (0.1, False, 1000, 1.0)])
    version_with("v0002", [(0.8, True, 400, 1.0), (0.6, True, 100, 1.0), (0.2, False, 1000, 1.0)])
    model_versions.activate_version(version="v0001", rescore=False)
    row = get_settings()
    assert (row.thresholds, row.auto_thresholds) == ({"bad": 0.3}, {"bad": 0.3})
    model_versions.activate_version(version="v0002", note="Promoted by the gate", rescore=False)
    row.refresh_from_db()
    assert (row.thresholds, row.auto_thresholds) == ({"bad": 0.6}, {"bad": 0.6})
    assert row.last_calibration["before"]["thresholds"] == {"bad": 0.3}
    assert row.last_calibration["after"]["thresholds"] == {"bad": 0.6}
    assert row.last_calibration["version"] == "v0002" and "Promoted by the gate" in row.last_calibration["reason"]
    assert ModelVersion.objects.get(version="v0002").calibration["derived"]["bad"]["auto"] == 0.6
    model_versions.activate_version(version="v0001", rescore=False)  # the previous version: a rollback
    row.refresh_from_db()
    assert (row.thresholds, row.auto_thresholds) == ({"bad": 0.3}, {"bad": 0.3})
    assert row.last_calibration["reason"].startswith("Rolled back")
    entries = AuditEntry.objects.filter(action=AuditAction.MODEL_RECALIBRATED).order_by("id")
    assert [entry.object_id for entry in entries] == [
        str(ModelVersion.objects.get(version=v).pk) for v in ("v0001", "v0002", "v0001")
    ]


@pytest.mark.django_db
def test_recalibration_keeps_a_pinned_label_and_switches_auto_off_without_evidence():
    version_with("v0001", [(0.9, True, 50, 1.0), (0.1, False, 100, 1.0)])
    row = get_settings()
    row.thresholds, row.auto_thresholds = {"bad": 0.7}, {"bad": 0.97}
    row.save()
    recalibrate(version="v0001", reason="test")
    row.refresh_from_db()
    assert row.thresholds == {"bad": 0.9} and row.auto_thresholds == {}
    assert "cannot support precision" in row.auto_off_reasons["bad"]
    row.thresholds, row.auto_thresholds, row.pinned_labels = {"bad": 0.42}, {"bad": 0.99}, ["bad"]
    row.save()
    recalibrate(version="v0001", reason="test")
    row.refresh_from_db()
    assert row.thresholds == {"bad": 0.42} and row.auto_thresholds == {"bad": 0.99}
    assert row.last_calibration["pinned"] == ["bad"]


@pytest.mark.django_db
def test_recalibration_keeps_the_review_threshold_while_the_holdout_has_too_few_violations():
    version_with("v0001", [(0.95, True, 10, 1.0), (0.01, True, 1, 1.0), (0.2, False, 300, 1.0)])
    row = get_settings()
    row.thresholds = {"bad": 0.5}
    row.save()
    recalibrate(version="v0001", reason="test")
    row.refresh_from_db()
    assert row.thresholds == {"bad": 0.5}
    assert (
        "11 effective violations"
        in ModelVersion.objects.get(version="v0001").calibration["derived"]["bad"]["review_reason"]
    )


def run_now(trigger=TrainingTrigger.MANUAL):
    return execute_training_run(run_id=request_training(trigger=trigger, dispatch=False).pk)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_a_promotion_stores_the_holdout_scores_and_recalibrates_for_the_new_model(tmp_path, rescores):
    import_initial_set(tmp_path, per_label=12)
    add_holdout(per_label=10)
    thresholds_before = dict(get_settings().thresholds)
    first = run_now(TrainingTrigger.INITIAL)
    assert first.status == TrainingRunStatus.SUCCEEDED
    version = ModelVersion.objects.get(version="v0001")
    assert len(version.holdout_scores["keys"]) == 20
    assert sorted(set(version.holdout_scores["labels"])) == ["bad", "ok"]
    row = get_settings()
    assert row.last_calibration["version"] == "v0001"
    # Every training example is scored by a model that never trained on it, and counted beside the holdout.
    training = version.training_scores
    assert sorted(training["keys"]) == sorted(
        TrainingExample.objects.filter(is_holdout=False).values_list("sha256", flat=True)
    )
    assert set(training["sources"]) <= {"out_of_fold", "validation", "test"} and "out_of_fold" in training["sources"]
    assert all(0 <= score <= 1 for score in training["scores"])
    # 22 violations can never show 99% precision with 95% confidence: auto-action stays off, and says why.
    derived = version.calibration["derived"]["bad"]
    assert row.auto_thresholds == {} and "cannot support precision" in row.auto_off_reasons["bad"]
    assert derived["evidence"] == {"holdout": 20, "with_training": 20 + len(training["keys"])}
    # The review threshold rests on the holdout alone: its 10 violations are too few for a 0.95 recall target to
    # allow a miss, so it stays (no version was replaced: nothing to match the queue's share to).
    in_force = thresholds_before.get("bad", row.default_threshold)
    assert derived["review"] == in_force and "10 effective violations" in derived["review_reason"]
    assert row.threshold_for("bad") == in_force
    second = run_now()
    assert second.status == TrainingRunStatus.SUCCEEDED, second.gate
    row.refresh_from_db()
    assert row.last_calibration["version"] == "v0002"
    assert len(ModelVersion.objects.get(version="v0002").holdout_scores["keys"]) == 20
    # Still too few violations: v0002 sends on at least v0001's share of the stream, never at a higher threshold.
    second_derived = ModelVersion.objects.get(version="v0002").calibration["derived"]["bad"]
    assert second_derived["review_source"] == "volume" and "v0001" in second_derived["review_reason"]
    assert row.threshold_for("bad") == second_derived["review"] <= in_force


@pytest.mark.django_db
def test_a_changed_precision_target_recalibrates_the_active_model_at_once():
    from moderation.services.settings import update_settings

    # 300 violations without a false positive: the bound is 0.991, enough for 0.99 but not for 0.995.
    version_with("v0001", [(0.9, True, 300, 1.0), (0.1, False, 300, 1.0)], active=True)
    recalibrate(version="v0001", reason="test")
    assert get_settings().auto_thresholds == {"bad": 0.9}
    update_settings(values={"precision_target": 0.995})
    row = get_settings()
    assert row.auto_thresholds == {} and "cannot support precision 0.995" in row.auto_off_reasons["bad"]
    assert row.last_calibration["reason"] == "The precision or recall target changed."


@pytest.mark.django_db
def test_a_pointer_moved_outside_the_desk_recalibrates_when_it_is_mirrored(monkeypatch):
    class PointerOnly(FakeRegistry):
        def active_version(self):
            return "v0001"

    monkeypatch.setattr(model_versions, "get_registry", PointerOnly)
    version_with("v0001", [(0.9, True, 1000, 1.0), (0.1, False, 1000, 1.0)])
    model_versions.sync_models()
    row = get_settings()
    assert row.auto_thresholds == {"bad": 0.9} and "sync_models" in row.last_calibration["reason"]
    model_versions.sync_models()  # nothing moved: no second recalibration
    assert AuditEntry.objects.filter(action=AuditAction.MODEL_RECALIBRATED).count() == 1


@pytest.mark.django_db
def test_the_training_examples_out_of_sample_scores_count_beside_the_holdout_each_example_once():
    from moderation.services.calibration import derive_for_version
    from moderation.services.thresholds import version_label_view

    # 10 clean holdout violations cannot support 99%; with 300 out-of-fold violations and as many allowed
    # photos far below, they can. One training key repeats a holdout key and counts once.
    version = version_with("v0001", [(0.95, True, 10, 1.0), (0.1, False, 10, 1.0)])
    row = get_settings()
    assert derive_for_version(version=version, settings_row=row)["bad"]["auto"] is None
    extra = holdout((0.97, True, 300, 1.0), (0.05, False, 300, 1.0))
    version.training_scores = {
        "keys": ["k0"] + [f"t{i}" for i in range(599)],
        "labels": ["bad" if positive else "ok" for positive in extra["positive"]],
        "scores": extra["scores"],
        "weights": extra["weights"],
        "sources": ["out_of_fold"] * 600,
    }
    version.save()
    scores, positive, _weights = version_label_view(version, "bad")
    assert len(scores) == 20 + 599 and sum(positive) == 10 + 299
    derived = derive_for_version(version=version, settings_row=row)["bad"]
    assert derived["auto"] == 0.95 and derived["precision_bound_at_auto"] >= 0.99
    # The review threshold is the holdout's own: 10 violations, too few to allow a miss at 0.95, so with no
    # version replaced the threshold in force stays, by volume.
    assert derived["review"] == 0.5 and derived["review_source"] == "volume"
    assert derived["evidence"] == {"holdout": 20, "with_training": 619}


@pytest.mark.django_db
def test_a_version_with_out_of_sample_scores_and_no_holdout_is_calibrated_on_them():
    from moderation.services.thresholds import version_label_view

    version = ModelVersion.objects.create(
        version="v0001", labels=["bad", "ok"], prohibited_labels=["bad"],
        training_scores={"keys": ["a", "b"], "labels": ["bad", "ok"], "scores": [0.9, 0.2], "weights": [1.0, 10.0],
                         "sources": ["test", "out_of_fold"]},
    )  # fmt: skip
    assert version_label_view(version, "bad") == ([0.9, 0.2], [True, False], [1.0, 10.0])
    version.training_scores = {}
    assert version_label_view(version, "bad") is None


def test_review_evidence_sets_the_review_threshold_and_comes_down_to_the_main_evidences_auto_threshold():
    main = holdout((0.9, True, 300, 1.0), (0.1, False, 300, 1.0))
    review = holdout((0.95, True, 40, 1.0), (0.2, False, 40, 1.0))
    alone = derive(**review, precision_target=0.99, recall_target=0.95)
    assert (alone.review, alone.auto) == (0.95, None)
    both = derive(**main, precision_target=0.99, recall_target=0.95, review_evidence=tuple(review.values()))
    assert (both.auto, both.review, both.recall_at_review) == (0.9, 0.9, 1.0)
    assert "Lowered to the auto-action threshold 0.9000" in both.review_reason
    empty = derive(**main, precision_target=0.99, recall_target=0.95, review_evidence=([], [], []))
    assert (empty.auto, empty.review) == (0.9, None) and "no examples" in empty.review_reason


def as_evidence(data):
    return data["scores"], data["positive"], data["weights"]


def test_a_volume_matched_threshold_sends_on_the_replaced_models_share_of_the_stream():
    # At 0.5 the replaced model sends on 10 violations and 10 allowed photos of 100: a fifth of the stream.
    replaced = as_evidence(holdout((0.9, True, 10, 1.0), (0.6, False, 10, 1.0), (0.1, False, 80, 1.0)))
    assert flagged_share(replaced, 0.5) == pytest.approx(0.2)
    # The new model is surer: only 8 of 100 score 0.5 or more; a fifth of its holdout needs 0.3.
    new = as_evidence(holdout((0.8, True, 8, 1.0), (0.35, False, 10, 1.0), (0.3, True, 2, 1.0), (0.05, False, 80, 1.0)))
    assert volume_matched(replaced=replaced, replaced_threshold=0.5, new=new) == 0.3
    # Shares are weighted: one audit item scoring 0.6 that stands for ten photos counts as ten.
    heavy = as_evidence(holdout((0.9, True, 10, 1.0), (0.6, False, 1, 10.0), (0.1, False, 80, 1.0)))
    assert flagged_share(heavy, 0.5) == pytest.approx(20 / 100)
    assert volume_matched(replaced=([], [], []), replaced_threshold=0.5, new=new) is None


@pytest.mark.django_db
def test_a_version_that_cannot_measure_recall_keeps_the_replaced_versions_queue_share_and_a_rollback_restores_it(
    monkeypatch,
):
    monkeypatch.setattr(model_versions, "get_registry", FakeRegistry)
    # Ten violations each: too few for a 0.95 recall target, so neither version can derive a review threshold.
    version_with("v0001", [(0.9, True, 10, 1.0), (0.6, False, 10, 1.0), (0.1, False, 80, 1.0)])
    version_with("v0002", [(0.8, True, 8, 1.0), (0.35, False, 10, 1.0), (0.3, True, 2, 1.0), (0.05, False, 80, 1.0)])
    version_with("v0003", [(0.9, True, 10, 1.0), (0.7, False, 30, 1.0), (0.1, False, 60, 1.0)])
    model_versions.activate_version(version="v0001", rescore=False)
    row = get_settings()
    assert row.thresholds.get("bad", row.default_threshold) == 0.5  # nothing to match: the default stays
    model_versions.activate_version(version="v0002", rescore=False)
    row.refresh_from_db()
    assert row.thresholds == {"bad": 0.3}
    derived = ModelVersion.objects.get(version="v0002").calibration["derived"]["bad"]
    assert (
        derived["review_source"] == "volume"
        and "share of the stream v0001 sent on at 0.5000" in derived["review_reason"]
    )
    model_versions.activate_version(version="v0001", rescore=False)  # a rollback: v0001's own threshold again
    row.refresh_from_db()
    assert row.thresholds == {"bad": 0.5} and row.last_calibration["reason"].startswith("Rolled back")
    model_versions.activate_version(version="v0002", rescore=False)  # and v0002's own, not matched anew
    row.refresh_from_db()
    assert row.thresholds == {"bad": 0.3}
    # A version that already sends on more at the threshold in force keeps it: a higher one would cut recall.
    model_versions.activate_version(version="v0003", rescore=False)
    row.refresh_from_db()
    assert row.thresholds == {"bad": 0.3}
    assert "kept at 0.3000" in ModelVersion.objects.get(version="v0003").calibration["derived"]["bad"]["review_reason"]
