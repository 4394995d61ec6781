"""Audit sampling by score: the same share of below-threshold images reviewed, more of them near the threshold."""

import random

import pytest
from django.db import transaction

from moderation.models import (
    AuditSampling,
    Client,
    DecisionOutcome,
    ImageStatus,
    Listing,
    ListingImage,
    TrainingExample,
)
from moderation.selectors.audit import MIN_RECENT_BELOW, UNIFORM_SHARE, AuditPlan, audit_plan, closeness
from moderation.selectors.settings import get_settings
from moderation.services import review, routing
from moderation.services.training.trigger import record_decision, withdraw_decision
from tests.support.factories import make_image, make_user
from tests.support.images import PROHIBITED

pytestmark = pytest.mark.django_db


def _settings(rate=0.1, sampling=AuditSampling.BY_SCORE, threshold=0.5):
    row = get_settings()
    row.audit_rate = rate
    row.audit_sampling = sampling
    row.default_threshold = threshold
    row.thresholds = {PROHIBITED: threshold}
    row.save()
    return row


def _scored_history(probabilities):
    """Scored images as the scoring service leaves them, oldest first."""
    listing = Listing.objects.create(
        client=Client.objects.desk(), external_id=f"history-{Listing.objects.count()}", title="history"
    )
    ListingImage.objects.bulk_create(
        ListingImage(
            listing=listing,
            sha256=f"{listing.pk:032x}{index:032x}",
            file=f"history/{listing.pk}-{index}.png",
            status=ImageStatus.CLEARED,
            prohibited_probability=probability,
            prohibited_label=PROHIBITED,
            model_version="v0001",
        )
        for index, probability in enumerate(probabilities)
    )


def _route(probability, row, draw=0.99, plan=None):
    image = ListingImage(status=ImageStatus.PENDING)
    routing.route_image(
        image=image,
        model_version="v0001",
        probabilities={"allowed": 1 - probability, PROHIBITED: probability},
        prohibited=[PROHIBITED],
        settings_row=row,
        rng=lambda: draw,
        plan=plan,
    )
    return image


def test_closeness_is_the_score_over_its_threshold():
    row = _settings(threshold=0.4)
    assert closeness(0.1, PROHIBITED, row) == pytest.approx(0.25)
    assert closeness(0.0, PROHIBITED, row) == 0.0
    assert closeness(0.6, PROHIBITED, row) == 1.0


def test_uniform_sampling_gives_every_image_below_the_threshold_the_audit_rate():
    row = _settings(sampling=AuditSampling.UNIFORM)
    _scored_history([0.01 * i for i in range(100)])
    plan = audit_plan(row)
    assert plan.mean_closeness is None
    assert [plan.probability(c) for c in (0.0, 0.5, 0.99)] == [0.1, 0.1, 0.1]


def test_sampling_by_score_waits_for_enough_history_and_ignores_flagged_images():
    row = _settings()
    # Above-threshold images say nothing about the typical image below it.
    _scored_history([0.9] * 400 + [0.1] * (MIN_RECENT_BELOW - 1))
    assert audit_plan(row).mean_closeness is None
    _scored_history([0.3])
    plan = audit_plan(row)
    assert plan.mean_closeness == pytest.approx((0.2 * (MIN_RECENT_BELOW - 1) + 0.6) / MIN_RECENT_BELOW)


def test_sampling_by_score_keeps_the_audit_rate_on_average_and_favours_scores_near_the_threshold():
    row = _settings(rate=0.1)
    scores = [0.5 * (i / 200) ** 3 for i in range(200)]  # mostly confident, a few near the threshold
    _scored_history(scores)
    plan = audit_plan(row)
    probabilities = [plan.probability(closeness(s, PROHIBITED, row)) for s in scores]
    assert sum(probabilities) / len(probabilities) == pytest.approx(0.1)
    assert min(probabilities) == pytest.approx(0.1 * UNIFORM_SHARE)
    assert plan.mean_closeness == pytest.approx(sum(s / 0.5 for s in scores) / len(scores))
    assert plan.probability(0.99) > 2 * 0.1
    assert plan.probability(1.0) <= 1.0
    assert AuditPlan(rate=0.9, mean_closeness=0.05).probability(0.9) == 1.0
    assert AuditPlan(rate=0.0, mean_closeness=0.05).probability(0.9) == 0.0


def test_routing_records_the_probability_each_image_reached_review_with():
    row = _settings(rate=0.1)
    plan = AuditPlan(rate=0.1, mean_closeness=0.2)
    flagged = _route(0.7, row, plan=plan)
    assert (flagged.status, flagged.is_audit, flagged.audit_probability) == (ImageStatus.FLAGGED, False, 1.0)
    near = _route(0.45, row, draw=0.0, plan=plan)
    assert (near.status, near.is_audit) == (ImageStatus.FLAGGED, True)
    assert near.audit_probability == pytest.approx(0.1 * (0.5 + 0.5 * 0.9 / 0.2))
    cleared = _route(0.01, row, plan=plan)
    assert (cleared.status, cleared.is_audit) == (ImageStatus.CLEARED, False)
    assert cleared.audit_probability == pytest.approx(0.1 * (0.5 + 0.5 * 0.02 / 0.2))
    # The draw is compared with the image's own probability.
    assert _route(0.01, row, draw=0.06, plan=plan).status == ImageStatus.CLEARED
    assert _route(0.45, row, draw=0.06, plan=plan).status == ImageStatus.FLAGGED


def test_weighted_audits_estimate_the_stream_they_were_drawn_from():
    """Summing 1 / probability over the audited images recovers how many images, and how many near the
    threshold, went unreviewed: the property training and the gate rely on."""
    row = _settings(rate=0.1)
    rng = random.Random(3)
    scores = [0.5 * rng.random() ** 4 for _ in range(20000)]
    _scored_history(scores[:500])
    plan = audit_plan(row)
    audited = [s for s in scores if rng.random() < plan.probability(closeness(s, PROHIBITED, row))]
    weights = [1 / plan.probability(closeness(s, PROHIBITED, row)) for s in audited]
    assert len(audited) / len(scores) == pytest.approx(0.1, rel=0.1)
    assert sum(weights) == pytest.approx(len(scores), rel=0.05)
    near = sum(w for s, w in zip(audited, weights, strict=True) if s > 0.25)
    assert near == pytest.approx(sum(1 for s in scores if s > 0.25), rel=0.1)
    # Near the threshold, sampling by score reviews far more of the images than the uniform rate would.
    assert sum(1 for s in audited if s > 0.25) > 2 * 0.1 * sum(1 for s in scores if s > 0.25)


def test_an_audit_decision_weighs_the_inverse_of_its_own_sampling_probability(media_root):
    _settings(rate=0.1)
    moderator = make_user("mod")
    image = make_image(PROHIBITED)
    ListingImage.objects.filter(pk=image.pk).update(is_audit=True, audit_probability=0.25, prohibited_probability=0.4)
    review.claim_next(user=moderator)
    with transaction.atomic():
        decision = review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    assert (decision.was_audit, decision.audit_probability) == (True, 0.25)
    assert TrainingExample.objects.get(image=image).weight == pytest.approx(4.0)

    # A later change of the audit rate does not re-weigh the decision: its own probability stands.
    _settings(rate=0.5)
    with transaction.atomic():
        withdraw_decision(decision=decision)
        record_decision(decision=decision)
    assert TrainingExample.objects.get(image=image).weight == pytest.approx(4.0)
