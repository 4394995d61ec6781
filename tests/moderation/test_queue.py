"""The queue's order, keyset paging and counters (selectors/queue.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from moderation.models import ImageStatus, Score
from moderation.selectors import queue
from moderation.services import review
from tests.support.factories import make_flagged, make_moderator


@pytest.mark.django_db
def test_queue_page_orders_by_probability_then_age_and_pages_without_gaps():
    made = [make_flagged(p) for p in (0.6, 0.9, 0.9, 0.75, 0.99, 0.9, 0.5)]
    make_flagged(0.999, status=ImageStatus.CLEARED)
    expected = [img.pk for img in sorted(made, key=lambda i: (-i.prohibited_probability, i.created_at, i.pk))]
    seen, cursor = [], None
    while True:
        page = queue.queue_page(cursor, limit=3)
        seen += [img.pk for img in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


@pytest.mark.django_db
def test_queue_page_uses_a_fixed_number_of_queries():
    for p in (0.9, 0.8, 0.7, 0.6):
        make_flagged(p)
    with CaptureQueriesContext(connection) as ctx:
        page = queue.queue_page(limit=50)
        titles = [img.listing.title for img in page.items]
    assert len(titles) == 4
    # The page, then its leads' near-duplicate groups by the page's IDs.
    assert len(ctx.captured_queries) == 2


@pytest.mark.django_db
def test_malformed_cursor_means_first_page():
    first = make_flagged(0.9)
    assert queue.queue_page("not-a-cursor").items[0].pk == first.pk
    assert queue.queue_page("0.5_garbage_1").items[0].pk == first.pk


@pytest.mark.django_db
def test_queue_stats_counts_open_audit_claimed_and_backlog_age(frozen_clock):
    moderator = make_moderator()
    oldest = make_flagged(0.9)
    oldest.flagged_at = frozen_clock.current - timedelta(hours=2)
    oldest.save()
    make_flagged(0.8, is_audit=True)
    make_flagged(0.7)
    make_flagged(0.99, status=ImageStatus.CONFIRMED)
    review.claim_next(user=moderator)
    stats = queue.queue_stats()
    assert (stats.open, stats.audit, stats.claimed) == (3, 1, 1)
    assert stats.backlog_seconds == pytest.approx(7200)
    assert stats.backlog_display == "2 h 0 min"
    frozen_clock.advance(seconds=3600)
    assert queue.queue_stats().claimed == 0


@pytest.mark.django_db
def test_item_view_sorts_probabilities_and_marks_prohibited_labels():
    image = make_flagged(0.7, label="knife")
    Score.objects.create(
        image=image,
        model_version="v0001",
        probabilities={"bag": 0.2, "knife": 0.7, "shirt": 0.1},
        prohibited_probability=0.7,
        prohibited_label="knife",
    )
    view = queue.item_view(image.pk)
    assert view.probabilities[0] == ("knife", 0.7, True)
    assert [row[0] for row in view.probabilities] == ["knife", "bag", "shirt"]
    assert view.probabilities[1][2] is False


@pytest.mark.django_db
def test_listing_page_pages_newest_first():
    listings = [make_flagged(0.5).listing for _ in range(5)]
    page, cursor = queue.listing_page(limit=2)
    assert [listing.pk for listing in page] == [listings[4].pk, listings[3].pk]
    assert page[0].image_count == 1 and page[0].flagged_count == 1
    rest, _ = queue.listing_page(cursor_id=cursor, limit=10)
    assert [listing.pk for listing in rest] == [listing.pk for listing in reversed(listings[:3])]


@pytest.mark.django_db
def test_queue_stats_stop_counting_at_the_cap():
    for _ in range(3):
        make_flagged(0.9, is_audit=True)
    stats = queue.queue_stats(cap=2)
    assert stats.open_capped and stats.audit_capped
    assert not queue.queue_stats(cap=3).open_capped
    assert queue.queue_stats(cap=3).open == 3


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "—"), (30, "< 1 min"), (59 * 60, "59 min"), (47 * 3600 + 60, "47 h 1 min"), (50 * 3600, "2 d 2 h")],
)
def test_backlog_display_uses_two_units_at_most(frozen_clock, seconds, shown):
    oldest = None if seconds is None else frozen_clock.current - timedelta(seconds=seconds)
    assert queue.QueueStats(open=1, audit=0, claimed=0, oldest_flagged_at=oldest).backlog_display == shown
