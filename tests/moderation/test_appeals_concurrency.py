"""Appeals raced on PostgreSQL: reviewers deciding at once and sellers filing at once, each thread on its own
connection. SQLite serialises every write transaction, so these need PostgreSQL (DATABASE_URL) and skip elsewhere."""

import pytest
from django.db import connection

from moderation.models import Appeal, AppealStatus, Decision, Event, EventType, Listing, ListingStatus
from moderation.selectors.settings import get_settings
from moderation.services import appeals
from tests.support.concurrency import run_together
from tests.support.factories import make_moderator, taken_down_listing

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def on_postgres(media_root, active_model):
    if connection.vendor != "postgresql":
        pytest.skip("row-lock races need PostgreSQL: set DATABASE_URL=postgres://...")
    settings_row = get_settings()
    settings_row.retrain_batch_size = 100_000  # no retrain is queued while the appeals race
    settings_row.save()


def file(listing, **extra):
    return appeals.file_appeal(listing_id=listing.pk, client=listing.client, text="Allowed.", **extra)


def test_two_reviewers_deciding_at_once_store_one_outcome(moderator):
    reviewers = [make_moderator(), make_moderator()]
    for round_ in range(3):
        listing = taken_down_listing(moderator=moderator, images=2)
        appeal = file(listing).appeal
        results = run_together(
            [
                lambda pk=appeal.pk: appeals.decide_appeal(
                    appeal_id=pk, user=reviewers[0], outcome="overturn", note="Ok."
                ),
                lambda pk=appeal.pk: appeals.decide_appeal(
                    appeal_id=pk, user=reviewers[1], outcome="uphold", note="No."
                ),
            ]
        )
        won = [r for r in results if isinstance(r, Appeal)]
        refused = [r for r in results if isinstance(r, appeals.AppealAlreadyDecided)]
        assert len(won) == 1 and len(refused) == 1, f"round {round_}: {results}"
        stored = Appeal.objects.get(pk=appeal.pk)
        assert (stored.status, stored.decided_by_id) == (won[0].status, won[0].decided_by_id)
        overturned = stored.status == AppealStatus.OVERTURNED
        assert Decision.objects.filter(appeal=appeal).count() == (2 if overturned else 0)
        expected = ListingStatus.LIVE if overturned else ListingStatus.TAKEN_DOWN
        assert Listing.objects.get(pk=listing.pk).status == expected
        assert Event.objects.filter(listing=listing, type=EventType.APPEAL_DECIDED).count() == 1


def test_four_overturns_at_once_make_one_set_of_new_decisions(moderator):
    listing = taken_down_listing(moderator=moderator)
    appeal = file(listing).appeal
    reviewers = [make_moderator() for _ in range(4)]
    results = run_together(
        [
            lambda r=r: appeals.decide_appeal(appeal_id=appeal.pk, user=r, outcome="overturn", note="Allowed.")
            for r in reviewers
        ]
    )
    assert sum(isinstance(r, Appeal) for r in results) == 1, results
    assert sum(isinstance(r, appeals.AppealAlreadyDecided) for r in results) == 3, results
    assert Decision.objects.filter(image__listing=listing, undone_at__isnull=True).count() == 1
    assert Event.objects.filter(listing=listing, type=EventType.IMAGE_DECIDED).count() == 2  # confirm, then reject
    sequences = list(Event.objects.filter(listing=listing).order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))


def test_sellers_filing_at_once_store_one_appeal(moderator):
    listing = taken_down_listing(moderator=moderator)
    results = run_together([lambda: file(listing)] * 4)
    filed = [r for r in results if isinstance(r, appeals.Filing)]
    refused = [r for r in results if isinstance(r, appeals.AlreadyAppealed)]
    assert len(filed) == 1 and len(refused) == 3, results
    assert Appeal.objects.filter(listing=listing).count() == 1


def test_retries_racing_with_one_idempotency_key_all_get_the_one_appeal(moderator):
    listing = taken_down_listing(moderator=moderator)
    results = run_together([lambda: file(listing, idempotency_key="retry-1")] * 4)
    assert all(isinstance(r, appeals.Filing) for r in results), results
    assert sum(r.created for r in results) == 1
    assert len({r.appeal.pk for r in results}) == 1
    assert Event.objects.filter(listing=listing, type=EventType.APPEAL_RECEIVED).count() == 1
