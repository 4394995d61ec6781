"""Decisions become training examples; the initial training set is imported and kept; the holdout is frozen."""

import pytest
from django.core.management import call_command
from django.db import transaction

from moderation.models import DecisionOutcome, ExampleSource, TrainingExample
from moderation.selectors.settings import get_settings
from moderation.selectors.training import example_path, holdout_examples, trainable_examples
from moderation.services.examples import is_holdout
from moderation.services.training.trigger import record_decision, withdraw_decision
from tests.support.factories import make_decision, make_image, make_user, mirror_active_labels
from tests.support.images import ALLOWED, PROHIBITED, write_training_folder

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loop_settings")]


def decide(image, moderator, outcome, label=None):
    with transaction.atomic():
        decision = make_decision(image, moderator, outcome, label)
        record_decision(decision=decision)
    return decision


def test_confirm_makes_an_example_of_the_prohibited_label_with_its_decision_and_moderator():
    moderator = make_user("mod")
    image = make_image(PROHIBITED)
    decision = decide(image, moderator, DecisionOutcome.CONFIRM)
    example = TrainingExample.objects.get()
    assert (example.label, example.source, example.active) == (PROHIBITED, ExampleSource.DECISION, True)
    assert example.decision == decision and example.moderator == moderator and example.image == image
    assert example.sha256 == image.sha256
    assert example_path(example).read_bytes() == image.file.open("rb").read()


def test_rejected_decision_becomes_a_negative_example_of_the_allowed_label():
    image = make_image(ALLOWED)
    decide(image, make_user("mod"), DecisionOutcome.REJECT)
    example = TrainingExample.objects.get()
    assert example.label == ALLOWED
    assert example.source == ExampleSource.DECISION


def test_label_comes_from_the_active_model_when_the_decision_has_none():
    mirror_active_labels()
    moderator = make_user("mod")
    confirmed, rejected = make_image(PROHIBITED), make_image(ALLOWED)
    decide(confirmed, moderator, DecisionOutcome.CONFIRM, label="")
    decide(rejected, moderator, DecisionOutcome.REJECT, label="")
    assert TrainingExample.objects.get(image=confirmed).label == PROHIBITED
    assert TrainingExample.objects.get(image=rejected).label == ALLOWED


def test_undo_deactivates_and_an_overturn_relabels_the_same_example():
    moderator, other = make_user("mod"), make_user("other")
    image = make_image(PROHIBITED)
    first = decide(image, moderator, DecisionOutcome.CONFIRM)
    with transaction.atomic():
        from moderation import clock

        first.undone_at = clock.now()
        first.save(update_fields=["undone_at"])
        withdraw_decision(decision=first)
    example = TrainingExample.objects.get()
    assert example.active is False
    assert not trainable_examples().exists() and not holdout_examples().exists()

    second = decide(image, other, DecisionOutcome.REJECT)
    example = TrainingExample.objects.get()
    assert (example.label, example.active, example.decision, example.moderator) == (ALLOWED, True, second, other)


def test_holdout_is_decided_by_the_image_hash_alone():
    hashes = [f"{i:064x}" for i in range(2000)]
    chosen = [h for h in hashes if is_holdout(sha256=h, share=0.2)]
    assert 0.15 < len(chosen) / len(hashes) < 0.25
    assert chosen == [h for h in hashes if is_holdout(sha256=h, share=0.2)]
    assert not any(is_holdout(sha256=h, share=0.0) for h in hashes)
    # A larger share keeps every image already in the holdout: growing it never moves one into training.
    assert set(chosen) <= {h for h in hashes if is_holdout(sha256=h, share=0.4)}


def test_decision_examples_follow_the_holdout_share_and_holdout_is_never_trainable():
    settings_row = get_settings()
    settings_row.holdout_share = 0.5
    settings_row.save()
    moderator = make_user("mod")
    for _ in range(30):
        decide(make_image(PROHIBITED), moderator, DecisionOutcome.CONFIRM)
    rows = list(TrainingExample.objects.all())
    assert [row.is_holdout for row in rows] == [is_holdout(sha256=row.sha256, share=0.5) for row in rows]
    assert 0 < sum(row.is_holdout for row in rows) < 30
    assert set(trainable_examples()).isdisjoint(set(holdout_examples()))


def test_import_training_set_copies_files_keeps_them_out_of_the_holdout_and_is_idempotent(tmp_path, settings):
    folder = write_training_folder(tmp_path / "initial", per_label=4)
    settings_row = get_settings()
    settings_row.holdout_share = 0.9
    settings_row.save()
    call_command("import_training_set", str(folder), "--prohibited", PROHIBITED)
    rows = list(TrainingExample.objects.all())
    assert len(rows) == 8
    assert {row.source for row in rows} == {ExampleSource.INITIAL}
    assert not any(row.is_holdout for row in rows)
    assert all(example_path(row).is_file() and str(settings.MEDIA_ROOT) in str(example_path(row)) for row in rows)
    assert get_settings().thresholds == {PROHIBITED: get_settings().default_threshold}
    # Initial examples stay part of the training data after decisions arrive.
    decide(make_image(ALLOWED), make_user("mod"), DecisionOutcome.REJECT)
    assert trainable_examples().filter(source=ExampleSource.INITIAL).count() == 8

    call_command("import_training_set", str(folder))
    assert TrainingExample.objects.filter(source=ExampleSource.INITIAL).count() == 8


def test_an_audit_decision_weighs_the_inverse_of_the_audit_rate_and_a_flagged_one_weighs_one():
    settings_row = get_settings()
    settings_row.audit_rate = 0.05
    settings_row.save()
    moderator = make_user("mod")
    flagged, audited = make_image(PROHIBITED), make_image(PROHIBITED)
    decide(flagged, moderator, DecisionOutcome.CONFIRM)
    with transaction.atomic():
        decision = make_decision(audited, moderator, DecisionOutcome.CONFIRM, None)
        decision.was_audit = True
        decision.save(update_fields=["was_audit"])
        record_decision(decision=decision)
    assert TrainingExample.objects.get(image=flagged).weight == 1.0
    assert TrainingExample.objects.get(image=audited).weight == pytest.approx(20.0)

    # An overturn re-reads the rate in force; a rate of 0 cannot have sampled the image, so it weighs 1.
    settings_row.audit_rate = 0.0
    settings_row.save()
    with transaction.atomic():
        from moderation import clock

        decision.undone_at = clock.now()
        decision.save(update_fields=["undone_at"])
        withdraw_decision(decision=decision)
        again = make_decision(audited, moderator, DecisionOutcome.REJECT, None)
        again.was_audit = True
        again.save(update_fields=["was_audit"])
        record_decision(decision=again)
    assert TrainingExample.objects.get(image=audited).weight == 1.0


def test_initial_examples_weigh_one(tmp_path):
    from moderation.services.examples import import_training_set

    import_training_set(directory=write_training_folder(tmp_path / "set", per_label=2))
    assert set(TrainingExample.objects.values_list("weight", flat=True)) == {1.0}
