"""The Needs attention page and its two actions: failed images retried or sent to human review, the listing's
status and the events the marketplace hears, refused to anyone but moderators."""

import pytest
from django.test import Client
from django.urls import reverse

from moderation import outbox
from moderation.models import (
    AuditAction,
    AuditEntry,
    DecisionOutcome,
    Event,
    EventType,
    ImageStatus,
    Listing,
    ListingImage,
    ListingStatus,
    ModelVersion,
)
from moderation.selectors import queue
from moderation.selectors.settings import get_settings
from moderation.services import queueing, review, scoring
from tests.support.factories import listing_with, make_flagged, make_moderator, make_user
from tests.support.images import BLUE, RED
from tests.support.scoring import never_audit

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root", "active_model", "audit_off")]


@pytest.fixture
def mod_client(moderator) -> Client:
    client = Client()
    client.force_login(moderator)
    return client


def fail_by_scoring(fake_scorer, *colors) -> tuple[Listing, ListingImage]:
    """A listing whose first photo the model cannot read, scored until scoring gives up on it."""
    listing = listing_with(*colors)
    bad = listing.images.order_by("id").first()
    fake_scorer.fail_on = {bad.file.open("rb").read()}
    ids = list(listing.images.values_list("pk", flat=True))
    for _ in range(get_settings().max_scoring_attempts):
        scoring.score_batch(image_ids=ids, scorer=fake_scorer, rng=never_audit)
    bad.refresh_from_db()
    assert bad.status == ImageStatus.FAILED
    listing.refresh_from_db()
    return listing, bad


def events_of(listing) -> list[tuple[str, dict]]:
    return list(Event.objects.filter(listing=listing).order_by("sequence").values_list("type", "data"))


def test_a_failed_image_puts_its_listing_in_needs_attention_with_an_event(fake_scorer, published):
    listing, bad = fail_by_scoring(fake_scorer, RED, BLUE)
    assert listing.status == ListingStatus.NEEDS_ATTENTION
    kinds = [kind for kind, _ in events_of(listing)]
    assert kinds[-2:] == [EventType.IMAGE_FAILED, EventType.LISTING_STATUS_CHANGED]
    # The bad photo was pending through its attempts; its neighbour was cleared in the first one.
    assert events_of(listing)[-1][1] == {"from": ListingStatus.PENDING, "to": ListingStatus.NEEDS_ATTENTION}


def test_the_page_lists_failed_images_with_reason_attempts_and_when(fake_scorer, published, mod_client):
    _listing, bad = fail_by_scoring(fake_scorer, RED, BLUE)
    make_flagged(0.9, title="Open item")  # in the queue, not failed
    html = mod_client.get(reverse("needs-attention")).content.decode()
    assert f'data-image="{bad.pk}"' in html and html.count('class="failed-row"') == 1
    assert "cannot decode this one" in html
    assert f"<td>{get_settings().max_scoring_attempts}</td>" in html
    assert bad.failed_at.strftime("%Y-%m-%d %H:%M") in html
    assert reverse("attention-retry", args=[bad.pk]) in html
    assert reverse("attention-send-to-review", args=[bad.pk]) in html
    # The navigation counts it for moderators.
    assert '<span class="count">1</span>' in html


def test_images_backing_off_after_an_infrastructure_error_are_shown_apart(mod_client, frozen_clock):
    image = listing_with(BLUE).images.get()
    ListingImage.objects.filter(pk=image.pk).update(
        deferrals=2, next_attempt_at=frozen_clock.current, last_error="Stored file unreadable: gone"
    )
    html = mod_client.get(reverse("needs-attention")).content.decode()
    assert 'class="failed-row"' not in html
    assert f'class="retrying-row" data-image="{image.pk}"' in html and "Stored file unreadable" in html


def test_retry_scores_the_image_again_from_its_first_attempt(
    fake_scorer, published, mod_client, django_capture_on_commit_callbacks
):
    listing, bad = fail_by_scoring(fake_scorer, RED, BLUE)
    published[outbox.SCORE_IMAGES].clear()
    before = Event.objects.filter(listing=listing).count()

    with django_capture_on_commit_callbacks(execute=True):
        response = mod_client.post(reverse("attention-retry", args=[bad.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("needs-attention")
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == (ImageStatus.PENDING, 0)
    assert published[outbox.SCORE_IMAGES] == [[bad.pk]]
    listing.refresh_from_db()
    assert listing.status == ListingStatus.PENDING
    new = events_of(listing)[before:]
    assert [kind for kind, _ in new] == [EventType.IMAGE_RETRIED, EventType.LISTING_STATUS_CHANGED]
    assert new[0][1]["image_id"] == bad.pk and new[0][1]["moderator"].startswith("mod_")
    assert new[1][1] == {"from": ListingStatus.NEEDS_ATTENTION, "to": ListingStatus.PENDING}
    entry = AuditEntry.objects.get(action=AuditAction.IMAGE_RETRIED)
    assert (entry.object_id, entry.before["status"], entry.after["status"]) == (str(bad.pk), "failed", "pending")

    # Whatever broke it is fixed: the retry is scored and the listing moves on.
    fake_scorer.fail_on = set()
    assert scoring.score_batch(image_ids=[bad.pk], scorer=fake_scorer, rng=never_audit).scored == [bad.pk]
    listing.refresh_from_db()
    assert listing.status == ListingStatus.IN_REVIEW


def test_send_to_review_flags_it_unscored_and_the_queue_and_item_page_say_why(
    fake_scorer, published, mod_client, moderator
):
    listing, bad = fail_by_scoring(fake_scorer, RED, BLUE)
    before = Event.objects.filter(listing=listing).count()
    assert mod_client.post(reverse("attention-send-to-review", args=[bad.pk])).status_code == 302
    bad.refresh_from_db()
    assert bad.status == ImageStatus.FLAGGED and bad.sent_to_review_at is not None
    assert bad.prohibited_probability is None and not bad.scores.exists()
    listing.refresh_from_db()
    assert listing.status == ListingStatus.IN_REVIEW
    new = events_of(listing)[before:]
    assert [kind for kind, _ in new] == [EventType.IMAGE_SENT_TO_REVIEW, EventType.LISTING_STATUS_CHANGED]
    assert new[0][1]["status"] == ImageStatus.FLAGGED and "cannot decode" in new[0][1]["reason"]
    assert AuditEntry.objects.get(action=AuditAction.IMAGE_SENT_TO_REVIEW).actor == moderator

    queue_html = mod_client.get(reverse("queue")).content.decode()
    assert "Not scored: sent to review" in queue_html and "no score" in queue_html
    item_html = mod_client.get(reverse("review-item", args=[bad.pk])).content.decode()
    assert 'id="sent-to-review"' in item_html and "cannot decode this one" in item_html

    # A moderator decides it like any other item; no new model scores it behind their back.
    decision = review.decide(user=moderator, image_id=bad.pk, outcome=DecisionOutcome.CONFIRM)
    assert decision.prohibited_probability is None
    listing.refresh_from_db()
    assert listing.status == ListingStatus.TAKEN_DOWN


def test_a_new_model_does_not_rescore_an_image_sent_to_human_review(fake_scorer, published, mod_client):
    _listing, bad = fail_by_scoring(fake_scorer, RED)
    mod_client.post(reverse("attention-send-to-review", args=[bad.pk]))
    ModelVersion.objects.update(is_active=False)
    ModelVersion.objects.create(version="v0002", labels=["allowed", "weapon"], prohibited_labels=["weapon"])
    ModelVersion.objects.filter(version="v0002").update(is_active=True)
    assert queueing.rescore_open_images() == 0
    promoted = type(fake_scorer)(version="v0002")
    assert scoring.score_batch(image_ids=[bad.pk], scorer=promoted).scored == []


def test_unscored_images_lead_the_queue_and_page_with_the_rest():
    scored = [make_flagged(p) for p in (0.9, 0.6)]
    unscored = [make_flagged(None, sent_to_review_at=scored[0].flagged_at) for _ in range(3)]
    seen, cursor = [], None
    while True:
        page = queue.queue_page(cursor, limit=2)
        seen += [image.pk for image in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [image.pk for image in unscored + scored]


def test_acting_twice_is_a_conflict_and_changes_nothing(fake_scorer, published, mod_client):
    listing, bad = fail_by_scoring(fake_scorer, RED)
    assert mod_client.post(reverse("attention-retry", args=[bad.pk])).status_code == 302
    events = Event.objects.filter(listing=listing).count()
    for name in ("attention-retry", "attention-send-to-review"):
        response = mod_client.post(reverse(name, args=[bad.pk]))
        assert response.status_code == 409 and b"not failed" in response.content
    assert Event.objects.filter(listing=listing).count() == events
    assert ListingImage.objects.get(pk=bad.pk).status == ImageStatus.PENDING


def test_only_moderators_see_or_act_on_failed_images(fake_scorer, published):
    _listing, bad = fail_by_scoring(fake_scorer, RED)
    plain = Client()
    plain.force_login(make_user("seller-support"))
    assert plain.get(reverse("needs-attention")).status_code == 403
    for name in ("attention-retry", "attention-send-to-review"):
        assert plain.post(reverse(name, args=[bad.pk])).status_code == 403
    assert Client().post(reverse("attention-retry", args=[bad.pk])).status_code == 302  # to the login page
    assert ListingImage.objects.get(pk=bad.pk).status == ImageStatus.FAILED
    assert "nav-attention" not in plain.get(reverse("login"), follow=True).content.decode()
    admin = Client()
    admin.force_login(make_moderator("boss"))
    assert admin.get(reverse("needs-attention")).status_code == 200


def test_the_page_goes_on_after_the_last_failed_image_shown(frozen_clock):
    from moderation.selectors.attention import attention_page

    failed = []
    for _ in range(3):
        frozen_clock.advance(seconds=1)
        failed.append(make_flagged(None, status=ImageStatus.FAILED, failed_at=frozen_clock.current))
    first = attention_page(limit=2)
    assert [image.pk for image in first.images] == [failed[0].pk, failed[1].pk] and first.failed_count == 3
    rest = attention_page(after=first.next_cursor, limit=2)
    assert [image.pk for image in rest.images] == [failed[2].pk] and rest.next_cursor is None
