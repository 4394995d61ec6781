"""Two thresholds route a score: auto-action takes the photo down (an automated decision, sampled to QA), review
queues it, below it is cleared; a QA verdict confirms or overturns the takedown and trains the model."""

import pytest
from django.db import IntegrityError, transaction

from moderation.models import (
    AuditAction,
    AuditEntry,
    Decision,
    DecisionOutcome,
    Event,
    EventType,
    ImageStatus,
    ListingStatus,
    ModelVersion,
    TrainingExample,
)
from moderation.selectors.calibration import auto_precision, qa_queue
from moderation.selectors.settings import get_settings
from moderation.services import auto_action
from moderation.services.listings import refresh_listing_status
from moderation.services.routing import record_score
from tests.support.factories import make_image, make_user
from tests.support.images import ALLOWED, PROHIBITED

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loop_settings")]


@pytest.fixture
def two_thresholds():
    ModelVersion.objects.create(
        version="v0001", labels=[PROHIBITED, ALLOWED], prohibited_labels=[PROHIBITED], is_active=True
    )
    row = get_settings()
    row.thresholds, row.auto_thresholds, row.qa_rate = {PROHIBITED: 0.5}, {PROHIBITED: 0.95}, 0.05
    row.audit_rate = 0.0
    row.save()
    return row


def score(image, value, rng=lambda: 0.0):
    with transaction.atomic():
        record_score(
            image=image,
            model_version="v0001",
            probabilities={PROHIBITED: value, ALLOWED: 1 - value},
            prohibited=[PROHIBITED],
            settings_row=get_settings(),
            rng=rng,
        )
        refresh_listing_status(image.listing_id)
    image.refresh_from_db()
    image.listing.refresh_from_db()
    return image


def test_each_band_routes_its_own_way(two_thresholds):
    taken = score(make_image(status=ImageStatus.PENDING), 0.97, rng=lambda: 0.99)
    queued = score(make_image(status=ImageStatus.PENDING), 0.7)
    cleared = score(make_image(status=ImageStatus.PENDING), 0.2)
    assert (taken.status, taken.listing.status) == (ImageStatus.CONFIRMED, ListingStatus.TAKEN_DOWN)
    assert (queued.status, queued.listing.status) == (ImageStatus.FLAGGED, ListingStatus.IN_REVIEW)
    assert (cleared.status, cleared.listing.status) == (ImageStatus.CLEARED, ListingStatus.LIVE)
    decision = Decision.objects.get()
    assert decision.image == taken and decision.automated and decision.moderator is None
    assert decision.bank_entry is None and decision.decided_by == "automated (model)"
    assert (decision.label, decision.model_version, decision.auto_threshold) == (PROHIBITED, "v0001", 0.95)
    assert decision.prohibited_probability == pytest.approx(0.97)
    assert not decision.qa_sampled  # the draw 0.99 is above the QA rate
    assert Event.objects.filter(type=EventType.IMAGE_DECIDED, listing=taken.listing).exists()
    entry = AuditEntry.objects.get(action=AuditAction.DECISION_MADE)
    assert entry.actor_name == "system" and entry.after["auto_threshold"] == 0.95
    assert not TrainingExample.objects.exists()  # the model's own output teaches nothing
    assert qa_queue().count() == 0


def test_no_auto_threshold_means_no_auto_action(two_thresholds):
    two_thresholds.auto_thresholds = {}
    two_thresholds.save()
    assert score(make_image(status=ImageStatus.PENDING), 0.999).status == ImageStatus.FLAGGED
    assert not Decision.objects.exists()


def test_an_automated_decision_cites_the_model_or_the_database_refuses_it(two_thresholds):
    image = make_image()
    with pytest.raises(IntegrityError), transaction.atomic():
        Decision.objects.create(
            image=image,
            automated=True,
            outcome=DecisionOutcome.CONFIRM,
            model_version="v0001",
            prohibited_probability=0.99,
        )  # no auto threshold: not the model's


def test_a_takedown_sampled_to_qa_and_overturned_restores_the_listing_counts_against_precision_and_trains(
    two_thresholds,
):
    moderator = make_user("qa-mod")
    image = score(make_image(status=ImageStatus.PENDING), 0.97, rng=lambda: 0.01)
    kept = score(make_image(status=ImageStatus.PENDING), 0.99, rng=lambda: 0.02)
    automated = Decision.objects.get(image=image)
    assert automated.qa_sampled and automated.qa_probability == 0.05
    assert [d.pk for d in qa_queue()] == [automated.pk, Decision.objects.get(image=kept).pk]

    live = auto_action.qa_verdict(user=moderator, decision_id=automated.pk, outcome=DecisionOutcome.REJECT)
    image.refresh_from_db()
    image.listing.refresh_from_db()
    automated.refresh_from_db()
    assert (image.status, image.listing.status) == (ImageStatus.REJECTED, ListingStatus.LIVE)
    assert automated.undone_at is not None and automated.overturned_at is not None
    assert automated.qa_outcome == DecisionOutcome.REJECT and automated.qa_by == moderator
    assert live.overturns == automated and live.moderator == moderator and live.outcome == DecisionOutcome.REJECT
    example = TrainingExample.objects.get(image=image)
    assert (example.label, example.weight, example.decision) == (ALLOWED, pytest.approx(20.0), live)
    assert AuditEntry.objects.filter(action=AuditAction.DECISION_QA, object_id=str(automated.pk)).exists()
    with pytest.raises(auto_action.QAError):
        auto_action.qa_verdict(user=moderator, decision_id=automated.pk, outcome=DecisionOutcome.CONFIRM)

    confirmed = Decision.objects.get(image=kept)
    auto_action.qa_verdict(user=moderator, decision_id=confirmed.pk, outcome=DecisionOutcome.CONFIRM)
    kept.refresh_from_db()
    assert kept.status == ImageStatus.CONFIRMED
    assert TrainingExample.objects.get(image=kept).weight == pytest.approx(20.0)
    [measured] = auto_precision()
    assert (measured["takedowns"], measured["verdicts"], measured["overturned"]) == (2, 2, 1)
    assert measured["precision"] == pytest.approx(0.5)
    assert qa_queue().count() == 0


def test_a_qa_verdict_only_applies_to_a_sampled_model_takedown(two_thresholds):
    image = score(make_image(status=ImageStatus.PENDING), 0.97, rng=lambda: 0.99)
    with pytest.raises(auto_action.QAError):
        auto_action.qa_verdict(
            user=make_user("m"), decision_id=Decision.objects.get(image=image).pk, outcome=DecisionOutcome.REJECT
        )


def test_the_listing_page_says_the_model_decided_and_where_qa_stands(two_thresholds):
    from django.test import Client
    from django.urls import reverse

    from tests.support.factories import make_moderator

    image = score(make_image(status=ImageStatus.PENDING), 0.97, rng=lambda: 0.01)
    browser = Client()
    browser.force_login(make_moderator())
    page = browser.get(reverse("listing-detail", args=[image.listing_id])).content.decode()
    assert "by automated (model)" in page and "auto-action at 0.9500" in page and "waiting for QA" in page
