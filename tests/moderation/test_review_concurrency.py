"""Races on PostgreSQL with real row locks: threads, each on its own database connection.

SQLite ignores `select_for_update`, so these tests need PostgreSQL (DATABASE_URL) and skip elsewhere.
"""

import pytest
from django.db import connection

from moderation.models import Decision, DecisionOutcome, ImageStatus, ListingImage
from moderation.selectors.settings import get_settings
from moderation.services import review
from tests.support.concurrency import run_together
from tests.support.factories import make_flagged, make_moderator

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("row-lock races need PostgreSQL: set DATABASE_URL=postgres://...")
    settings_row = get_settings()
    # Keep the learning loop from queueing a retrain while decisions race.
    settings_row.retrain_batch_size = 100_000
    settings_row.save()


def test_eight_moderators_claiming_at_once_never_get_the_same_item():
    moderators = [make_moderator() for _ in range(8)]
    for round_ in range(3):
        ListingImage.objects.all().delete()
        for i in range(10):
            make_flagged(0.5 + i / 100)
        results = run_together([lambda m=m: review.claim_next(user=m) for m in moderators])
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, errors
        claimed = [image.pk for image in results]
        assert len(set(claimed)) == 8, f"round {round_}: {claimed}"
        owners = dict(ListingImage.objects.filter(claimed_by__isnull=False).values_list("pk", "claimed_by"))
        assert owners == {image.pk: image.claimed_by_id for image in results}


def test_more_moderators_than_items_leaves_the_rest_empty_handed():
    moderators = [make_moderator() for _ in range(8)]
    for _ in range(3):
        make_flagged()
    results = run_together([lambda m=m: review.claim_next(user=m) for m in moderators])
    got = [r.pk for r in results if isinstance(r, ListingImage)]
    assert len(got) == len(set(got)) == 3
    assert results.count(None) == 5


def test_double_submitted_decisions_store_one():
    moderator = make_moderator()
    image = make_flagged()
    review.claim_next(user=moderator)
    submit = lambda: review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)  # noqa: E731
    results = run_together([submit] * 4)
    decisions = [r for r in results if isinstance(r, Decision)]
    refused = [r for r in results if isinstance(r, review.AlreadyDecided)]
    assert len(decisions) == 1 and len(refused) == 3, results
    assert Decision.objects.filter(image=image).count() == 1
    assert ListingImage.objects.get(pk=image.pk).status == ImageStatus.CONFIRMED


def test_confirm_and_reject_from_two_tabs_store_one():
    moderator = make_moderator()
    image = make_flagged()
    review.claim_next(user=moderator)
    results = run_together(
        [
            lambda: review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM),
            lambda: review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.REJECT),
        ]
    )
    winner = next(r for r in results if isinstance(r, Decision))
    assert sum(isinstance(r, review.AlreadyDecided) for r in results) == 1
    stored = Decision.objects.get(image=image)
    assert stored.outcome == winner.outcome
    expected_status = ImageStatus.CONFIRMED if winner.outcome == DecisionOutcome.CONFIRM else ImageStatus.REJECTED
    assert ListingImage.objects.get(pk=image.pk).status == expected_status
