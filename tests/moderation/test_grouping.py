"""Near-duplicates waiting for review are one queue entry; one decision decides them all, and undo takes all back."""

import pytest
from PIL import ImageEnhance

from moderation.models import Decision, DecisionOutcome, ImageStatus, ListingImage
from moderation.selectors.queue import queue_page
from moderation.services import grouping, review
from moderation.services.listings import withdraw_listing
from tests.support.banks import scored_photo
from tests.support.images import mirrored

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bank_desk")]


def brighter(image):
    return ImageEnhance.Brightness(image).enhance(1.2)


@pytest.fixture
def group():
    """The cat three times (as it is, mirrored, brighter) and the coffee once: two queue entries."""
    cats = [scored_photo("chelsea"), scored_photo("chelsea", transform=mirrored), scored_photo("chelsea", brighter)]
    coffee = scored_photo("coffee")
    for image in [*cats, coffee]:
        image.refresh_from_db()
    return cats, coffee


def test_copies_waiting_for_review_are_one_queue_entry_with_their_count(group):
    cats, coffee = group
    assert [image.duplicate_of_id for image in cats] == [None, cats[0].pk, cats[0].pk]
    assert coffee.duplicate_of_id is None
    items = queue_page().items
    assert sorted(item.pk for item in items) == sorted([cats[0].pk, coffee.pk])
    lead = next(item for item in items if item.pk == cats[0].pk)
    assert [member.pk for member in lead.group] == [cats[1].pk, cats[2].pk]


def test_the_queue_page_reads_its_groups_by_the_page_leads_not_by_scanning_every_open_item(group):
    """Two queries whatever the page holds, the second keyed by the page's own IDs: an `EXISTS` over every open
    item's group was planned by PostgreSQL as a scan of the whole queue."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    cats, coffee = group
    with CaptureQueriesContext(connection) as queries:
        items = queue_page().items
    assert len(queries.captured_queries) == 2
    assert "EXISTS" not in queries.captured_queries[0]["sql"].upper()
    assert (
        str(cats[0].pk) in queries.captured_queries[1]["sql"] and str(coffee.pk) in queries.captured_queries[1]["sql"]
    )
    assert {item.pk: len(item.group) for item in items} == {cats[0].pk: 2, coffee.pk: 0}


def test_claim_next_hands_out_leads_only(group, moderator, reviewer):
    cats, coffee = group
    handed = {review.claim_next(user=moderator).pk, review.claim_next(user=reviewer).pk}
    assert handed == {cats[0].pk, coffee.pk}


def test_one_decision_applies_to_every_member_each_with_its_own_row(group, moderator):
    cats, _coffee = group
    review.claim_item(user=moderator, image_id=cats[0].pk)
    decision = review.decide(user=moderator, image_id=cats[0].pk, outcome=DecisionOutcome.CONFIRM)
    members = Decision.objects.filter(applied_from=decision).order_by("image_id")
    assert [row.image_id for row in members] == [cats[1].pk, cats[2].pk]
    assert all(row.moderator == moderator and row.outcome == DecisionOutcome.CONFIRM for row in members)
    statuses = set(ListingImage.objects.filter(pk__in=[c.pk for c in cats]).values_list("status", flat=True))
    assert statuses == {ImageStatus.CONFIRMED}
    assert all(
        image.listing.status == "taken_down" for image in ListingImage.objects.filter(pk__in=[c.pk for c in cats])
    )


def test_undo_takes_the_whole_group_back_into_the_queue_as_a_group(group, moderator):
    cats, _coffee = group
    review.claim_item(user=moderator, image_id=cats[0].pk)
    decision = review.decide(user=moderator, image_id=cats[0].pk, outcome=DecisionOutcome.REJECT)
    review.undo_decision(user=moderator, decision_id=decision.pk)
    rows = {image.pk: image for image in ListingImage.objects.filter(pk__in=[c.pk for c in cats])}
    assert {image.status for image in rows.values()} == {ImageStatus.FLAGGED}
    assert [rows[c.pk].duplicate_of_id for c in cats] == [None, cats[0].pk, cats[0].pk]
    assert Decision.objects.filter(undone_at__isnull=True).count() == 0
    assert {e.removed_at is not None for e in cats[1].bank_entries.all()} <= {True}


def test_when_the_lead_leaves_the_queue_the_oldest_member_leads_the_rest(group):
    cats, _coffee = group
    withdraw_listing(listing_id=cats[0].listing_id)
    rows = {image.pk: image for image in ListingImage.objects.filter(pk__in=[c.pk for c in cats])}
    assert rows[cats[1].pk].duplicate_of_id is None and rows[cats[2].pk].duplicate_of_id == cats[1].pk
    assert cats[1].pk in [item.pk for item in queue_page().items]


def test_the_sweeper_repairs_a_group_whose_lead_left_behind_its_back(group):
    cats, _coffee = group
    ListingImage.objects.filter(pk=cats[0].pk).update(status=ImageStatus.CLEARED)
    assert grouping.repair_all() == 1
    assert ListingImage.objects.get(pk=cats[1].pk).duplicate_of_id is None


def test_a_photo_close_to_two_groups_joins_them(moderator):
    first = scored_photo("chelsea")
    second = scored_photo("chelsea", transform=mirrored)
    ListingImage.objects.filter(pk=second.pk).update(duplicate_of=None)  # as if they had been apart
    grouping.join_groups(images=[ListingImage.objects.get(pk=scored_photo("chelsea", brighter).pk)])
    assert ListingImage.objects.get(pk=second.pk).duplicate_of_id == first.pk


def test_photos_that_are_not_copies_or_have_no_quality_stay_apart():
    flat = [scored_photo("chelsea", transform=lambda im: im.point(lambda _v: 150)) for _ in range(2)]
    assert all(image.pdq_quality < 50 for image in flat)
    assert [ListingImage.objects.get(pk=image.pk).duplicate_of_id for image in flat] == [None, None]
