"""Claiming, deciding and undoing on the review desk (services/review.py)."""

from datetime import timedelta

import pytest

from moderation.models import (
    Decision,
    DecisionOutcome,
    ImageStatus,
    ListingImage,
    ListingStatus,
    ModelVersion,
    PolicyCategory,
    TrainingExample,
)
from moderation.permissions import MODERATORS, ensure_groups
from moderation.selectors.settings import get_settings
from moderation.services import review
from moderation.services.labels import label_for_outcome
from tests.support.factories import make_flagged, make_moderator


@pytest.fixture
def moderator(db):
    return make_moderator()


@pytest.mark.django_db
def test_groups_are_created_once_and_admins_get_model_permissions():
    moderators, admins = ensure_groups()
    again = ensure_groups()
    assert (moderators.pk, admins.pk) == (again[0].pk, again[1].pk)
    assert moderators.name == MODERATORS
    assert admins.permissions.filter(codename="change_moderationsettings").exists()


@pytest.mark.django_db
def test_claim_next_takes_highest_probability_then_oldest(moderator, frozen_clock):
    low = make_flagged(0.6)
    high_old = make_flagged(0.95)
    make_flagged(0.95)
    claimed = review.claim_next(user=moderator)
    assert claimed.pk == high_old.pk
    assert claimed.claimed_by == moderator
    assert claimed.claim_expires_at == frozen_clock.current + timedelta(seconds=get_settings().claim_lease_seconds)
    assert low.pk != claimed.pk


@pytest.mark.django_db
def test_claim_next_returns_the_live_claim_instead_of_a_second_item(moderator, frozen_clock):
    make_flagged(0.7)
    first = review.claim_next(user=moderator)
    make_flagged(0.99)
    assert review.claim_next(user=moderator).pk == first.pk
    assert ListingImage.objects.filter(claimed_by=moderator).count() == 1


@pytest.mark.django_db
def test_two_moderators_get_different_items_and_expired_leases_are_reclaimed(frozen_clock):
    first, second = make_moderator(), make_moderator()
    only = make_flagged(0.9)
    assert review.claim_next(user=first).pk == only.pk
    assert review.claim_next(user=second) is None
    frozen_clock.advance(seconds=get_settings().claim_lease_seconds + 1)
    assert review.claim_next(user=second).pk == only.pk


@pytest.mark.django_db
def test_claim_next_skips_excluded_and_gives_the_skipped_item_back(moderator, frozen_clock):
    top = make_flagged(0.99)
    second = make_flagged(0.8)
    assert review.claim_next(user=moderator).pk == top.pk
    assert review.claim_next(user=moderator, exclude_ids=[top.pk]).pk == second.pk
    top.refresh_from_db()
    assert top.claimed_by is None


@pytest.mark.django_db
def test_claim_next_ignores_items_that_are_not_flagged(moderator):
    make_flagged(0.99, status=ImageStatus.CLEARED)
    make_flagged(0.99, status=ImageStatus.PENDING)
    assert review.claim_next(user=moderator) is None


@pytest.mark.django_db
def test_claim_item_renews_own_claim_takes_free_items_and_refuses_others(moderator, frozen_clock):
    other = make_moderator()
    image = make_flagged()
    review.claim_next(user=moderator)
    frozen_clock.advance(seconds=30)
    renewed = review.claim_item(user=moderator, image_id=image.pk)
    assert renewed.claim_expires_at == frozen_clock.current + timedelta(seconds=get_settings().claim_lease_seconds)
    with pytest.raises(review.StaleClaim):
        review.claim_item(user=other, image_id=image.pk)
    frozen_clock.advance(seconds=get_settings().claim_lease_seconds + 1)
    assert review.claim_item(user=other, image_id=image.pk).claimed_by == other
    with pytest.raises(review.StaleClaim):
        review.claim_item(user=moderator, image_id=image.pk)


@pytest.mark.django_db
def test_claim_item_gives_back_the_previous_claim_and_refuses_decided_items(moderator):
    first, second = make_flagged(0.9), make_flagged(0.8)
    review.claim_next(user=moderator)
    review.claim_item(user=moderator, image_id=second.pk)
    first.refresh_from_db()
    assert first.claimed_by is None
    review.decide(user=moderator, image_id=second.pk, outcome=DecisionOutcome.REJECT)
    with pytest.raises(review.AlreadyDecided):
        review.claim_item(user=moderator, image_id=second.pk)


@pytest.mark.django_db
def test_release_returns_the_item_to_the_queue(moderator):
    other = make_moderator()
    image = make_flagged()
    review.claim_next(user=moderator)
    assert review.release_claim(user=other, image_id=image.pk) is False
    assert review.release_claim(user=moderator, image_id=image.pk) is True
    assert review.claim_next(user=other).pk == image.pk


@pytest.mark.django_db
def test_confirm_takes_the_listing_down_and_records_everything(moderator, frozen_clock, monkeypatch):
    recorded = []
    monkeypatch.setattr("moderation.services.review.record_decision", lambda *, decision: recorded.append(decision))
    image = make_flagged(0.91, label="knife", is_audit=True)
    review.claim_next(user=moderator)
    decision = review.decide(
        user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM, policy_category="weapons", note="blade"
    )
    image.refresh_from_db()
    assert image.status == ImageStatus.CONFIRMED
    assert image.confirmed_at == frozen_clock.current
    assert image.claimed_by is None
    assert image.listing.status == ListingStatus.TAKEN_DOWN
    assert (decision.label, decision.model_version, decision.prohibited_probability) == ("knife", "v0001", 0.91)
    assert decision.was_audit is True
    assert decision.policy_category == PolicyCategory.WEAPONS
    assert recorded == [decision]


@pytest.mark.django_db
def test_reject_teaches_the_allowed_label_the_active_model_names(moderator):
    ModelVersion.objects.create(
        version="v0001",
        labels=["bag", "knife", "shirt"],
        prohibited_labels=["knife"],
        allowed_label="shirt",
        is_active=True,
    )
    image = make_flagged(label="knife")
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.REJECT)
    image.refresh_from_db()
    assert image.status == ImageStatus.REJECTED
    assert image.rejected_at is not None
    assert image.listing.status == ListingStatus.LIVE
    assert decision.label == "shirt"
    assert decision.policy_category == PolicyCategory.NONE


@pytest.mark.django_db
def test_reject_under_a_model_with_several_allowed_labels_and_no_allowed_label_stands_but_teaches_nothing(moderator):
    ModelVersion.objects.create(
        version="v0001", labels=["bag", "knife", "shirt"], prohibited_labels=["knife"], is_active=True
    )
    image = make_flagged(label="knife")
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.REJECT)
    image.refresh_from_db()
    assert image.status == ImageStatus.REJECTED
    assert decision.label == ""
    assert not TrainingExample.objects.exists()


@pytest.mark.django_db
def test_reject_without_a_model_teaches_no_invented_label(moderator):
    image = make_flagged()
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.REJECT)
    assert decision.label == ""
    assert not TrainingExample.objects.exists()  # the verdict stands; no model says which label it teaches


@pytest.mark.django_db
def test_listing_stays_in_review_while_another_image_is_flagged(moderator):
    image = make_flagged(0.9)
    make_flagged(0.5, listing=image.listing)
    review.claim_next(user=moderator)
    review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.REJECT)
    image.listing.refresh_from_db()
    assert image.listing.status == ListingStatus.IN_REVIEW


@pytest.mark.django_db
def test_second_submission_is_refused_and_stores_nothing(moderator):
    image = make_flagged()
    review.claim_next(user=moderator)
    review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    with pytest.raises(review.AlreadyDecided):
        review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    assert Decision.objects.filter(image=image).count() == 1


@pytest.mark.django_db
def test_decision_without_a_live_own_claim_is_stale(moderator, frozen_clock):
    other = make_moderator()
    image = make_flagged()
    with pytest.raises(review.StaleClaim):
        review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    review.claim_next(user=other)
    with pytest.raises(review.StaleClaim):
        review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    frozen_clock.advance(seconds=get_settings().claim_lease_seconds + 1)
    with pytest.raises(review.StaleClaim):
        review.decide(user=other, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    assert not Decision.objects.exists()
    image.refresh_from_db()
    assert image.status == ImageStatus.FLAGGED


@pytest.mark.django_db
def test_training_failure_rolls_the_decision_back(moderator, monkeypatch):
    def explode(decision):
        raise RuntimeError("training store down")

    monkeypatch.setattr("moderation.services.review.record_decision", explode)
    image = make_flagged()
    review.claim_next(user=moderator)
    with pytest.raises(RuntimeError):
        review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    image.refresh_from_db()
    assert image.status == ImageStatus.FLAGGED
    assert not Decision.objects.exists()


@pytest.mark.django_db
def test_undo_within_the_window_reflags_and_withdraws(moderator, frozen_clock, monkeypatch):
    withdrawn = []
    monkeypatch.setattr("moderation.services.review.withdraw_decision", lambda *, decision: withdrawn.append(decision))
    image = make_flagged()
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    frozen_clock.advance(seconds=10)
    review.undo_decision(user=moderator, decision_id=decision.pk)
    image.refresh_from_db()
    decision.refresh_from_db()
    assert decision.undone_at == frozen_clock.current
    assert image.status == ImageStatus.FLAGGED
    assert image.confirmed_at is None
    assert image.claimed_by == moderator
    assert image.listing.status == ListingStatus.IN_REVIEW
    assert [d.pk for d in withdrawn] == [decision.pk]
    again = review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.REJECT)
    assert Decision.objects.filter(image=image).count() == 2
    assert Decision.objects.get(image=image, undone_at__isnull=True).pk == again.pk


@pytest.mark.django_db
def test_undo_is_refused_after_the_window_twice_or_by_someone_else(moderator, frozen_clock):
    other = make_moderator()
    first, second = make_flagged(0.9), make_flagged(0.8)
    review.claim_next(user=moderator)
    late = review.decide(user=moderator, image_id=first.pk, outcome=DecisionOutcome.CONFIRM)
    review.claim_next(user=moderator)
    soon = review.decide(user=moderator, image_id=second.pk, outcome=DecisionOutcome.CONFIRM)
    with pytest.raises(review.UndoNotAllowed):
        review.undo_decision(user=other, decision_id=soon.pk)
    review.undo_decision(user=moderator, decision_id=soon.pk)
    with pytest.raises(review.UndoNotAllowed):
        review.undo_decision(user=moderator, decision_id=soon.pk)
    frozen_clock.advance(seconds=review.UNDO_WINDOW.total_seconds() + 1)
    with pytest.raises(review.UndoNotAllowed):
        review.undo_decision(user=moderator, decision_id=late.pk)
    assert ListingImage.objects.get(pk=first.pk).status == ImageStatus.CONFIRMED


@pytest.mark.django_db
def test_unknown_outcome_or_category_is_a_value_error(moderator):
    image = make_flagged()
    review.claim_next(user=moderator)
    with pytest.raises(ValueError):
        review.decide(user=moderator, image_id=image.pk, outcome="maybe")
    with pytest.raises(ValueError):
        review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM, policy_category="x")


@pytest.mark.django_db
def test_confirm_label_comes_from_the_image_then_the_active_model_and_is_never_invented(moderator):
    image = make_flagged(label="")
    review.claim_next(user=moderator)
    assert label_for_outcome(outcome=DecisionOutcome.CONFIRM, flagged_label=image.prohibited_label) == ""
    ModelVersion.objects.create(version="v0002", labels=["bag", "knife"], prohibited_labels=["knife"], is_active=True)
    assert label_for_outcome(outcome=DecisionOutcome.CONFIRM, flagged_label=image.prohibited_label) == "knife"
    image.prohibited_label = "gun"
    assert label_for_outcome(outcome=DecisionOutcome.CONFIRM, flagged_label=image.prohibited_label) == "gun"
