"""Events for the marketplace: written in the transaction of the change they describe, numbered per listing, given a
feed position by the relay in commit order, and read back through the feed."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from moderation import outbox
from moderation.models import Client, Event, EventType, ImageStatus, OutboxMessage, WebhookDelivery, WebhookEndpoint
from moderation.selectors.settings import get_settings
from moderation.services import review, scoring
from moderation.services.events import moderator_pseudonym
from moderation.services.relay import relay_events
from tests.support import images
from tests.support.factories import make_api_key, make_moderator, store_listing
from tests.support.images import BLUE, RED
from tests.support.scoring import never_audit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _setup(media_root, active_model):
    row = get_settings()
    row.audit_rate = 0.0
    row.save()


def events_of(listing) -> list[tuple[str, int]]:
    return list(Event.objects.filter(listing=listing).order_by("sequence").values_list("type", "sequence"))


def upload(*colors, external_id="ad-1", client=None):
    files = [images.upload(images.jpeg_bytes(color=color)) for color in colors]
    return store_listing(external_id=external_id, files=files, client=client)


@pytest.mark.django_db(transaction=True)
def test_scoring_and_deciding_write_events_in_order_with_a_sequence_per_listing(fake_scorer, published):
    listing = upload(RED, BLUE)
    red, blue = listing.images.order_by("id")
    scoring.score_batch(image_ids=[red.pk, blue.pk], scorer=fake_scorer, rng=never_audit)
    assert events_of(listing) == [
        ("image.scored", 1),
        ("image.scored", 2),
        ("listing.status_changed", 3),
    ]
    scored = Event.objects.get(listing=listing, sequence=1)
    assert scored.data["image_id"] == red.pk and scored.data["status"] == ImageStatus.FLAGGED
    assert scored.data["model_version"] == "v0001" and scored.data["probabilities"]["weapon"] > 0.5
    assert Event.objects.get(listing=listing, sequence=3).data == {"from": "pending", "to": "in_review"}

    moderator = make_moderator()
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=red.pk, outcome="confirm")
    decided = Event.objects.get(listing=listing, type=EventType.IMAGE_DECIDED)
    assert decided.sequence == 4
    assert decided.data["outcome"] == "confirm" and decided.data["decision_id"] == decision.pk
    # Pseudonymous: stable for the moderator, and neither their name nor their id.
    assert decided.data["moderator"] == moderator_pseudonym(moderator.pk)
    assert re.fullmatch(r"mod_[0-9a-f]{16}", decided.data["moderator"]) and moderator.username not in str(decided.data)
    assert moderator_pseudonym(moderator.pk + 1) != decided.data["moderator"]
    review.undo_decision(user=moderator, decision_id=decision.pk)
    assert [kind for kind, _ in events_of(listing)][4:] == [
        "listing.status_changed",
        "decision.undone",
        "listing.status_changed",
    ]
    assert list(Event.objects.filter(listing=listing).values_list("sequence", flat=True).order_by("id")) == list(
        range(1, 8)
    )
    # Each transaction that wrote events (the scoring, the decision, the undo) queued the relay once.
    assert OutboxMessage.objects.filter(task_name=outbox.RELAY_EVENTS).count() == 3
    assert published[outbox.RELAY_EVENTS] == [[], [], []]


def test_a_rolled_back_change_leaves_no_event(fake_scorer, published):
    listing = upload(RED)
    with pytest.raises(RuntimeError), transaction.atomic():
        scoring.score_batch(image_ids=[listing.images.get().pk], scorer=fake_scorer, rng=never_audit)
        raise RuntimeError("the transaction around it fails")
    assert not Event.objects.exists()


def test_a_new_model_that_routes_an_open_image_differently_writes_image_rescored(fake_scorer, published):
    listing = upload(RED)
    image = listing.images.get()
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    row = get_settings()
    row.default_threshold = 0.99
    row.save()
    from tests.support.scoring import FakeScorer

    promoted = FakeScorer(version="v0002")
    scoring.score_batch(image_ids=[image.pk], scorer=promoted, rng=never_audit)
    rescored = Event.objects.get(type=EventType.IMAGE_RESCORED)
    assert rescored.data["status"] == ImageStatus.CLEARED and rescored.data["previous_status"] == ImageStatus.FLAGGED
    assert rescored.data["model_version"] == "v0002"


def test_the_relay_numbers_events_in_the_order_it_sees_them_committed_and_queues_deliveries(
    published, django_capture_on_commit_callbacks
):
    client = Client.objects.create(name="acme")
    now = timezone.now()
    wanted = WebhookEndpoint.objects.create(
        client=client, url="https://hooks.example.com/a", event_types=["listing.status_changed"]
    )
    WebhookEndpoint.objects.create(client=client, url="https://hooks.example.com/b", event_types=["image.scored"])
    WebhookEndpoint.objects.create(client=client, url="https://hooks.example.com/c", is_enabled=False)
    later = [
        Event.objects.create(id=100 + n, type="listing.status_changed", client=client, occurred_at=now)
        for n in range(2)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        assert relay_events() == 2
    # An event with a lower id committed after the relay moved on: it still gets the next position.
    late = Event.objects.create(id=5, type="listing.status_changed", client=client, occurred_at=now)
    with django_capture_on_commit_callbacks(execute=True):
        assert relay_events() == 1
    positions = dict(Event.objects.values_list("id", "position"))
    assert positions == {100: 1, 101: 2, 5: 3}
    assert relay_events() == 0
    deliveries = WebhookDelivery.objects.order_by("event__position")
    assert [(d.event_id, d.endpoint_id) for d in deliveries] == [(e.pk, wanted.pk) for e in [*later, late]]
    assert published[outbox.DELIVER_WEBHOOKS] == [wanted.pk, wanted.pk]


def test_the_feed_reads_a_clients_events_after_a_cursor_at_least_once(fake_scorer, published):
    users = get_user_model().objects
    key = make_api_key(users.create_user("acme-api"), "acme")
    other_key = make_api_key(users.create_user("other-api"), "other")
    acme = Client.objects.get(name="acme")
    listing = upload(RED, BLUE, client=acme)
    upload(RED, external_id="theirs", client=Client.objects.get(name="other"))
    scoring.score_batch(image_ids=list(listing.images.values_list("pk", flat=True)), scorer=fake_scorer)
    relay_events()
    feed = APIClient()
    feed.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    first = feed.get("/api/v1/events", {"limit": 2}).json()
    assert [event["type"] for event in first["events"]] == ["image.scored", "image.scored"]
    event = first["events"][0]
    assert event["id"].startswith("evt_") and event["client"] == "acme" and event["external_id"] == "ad-1"
    assert event["listing_id"] == listing.pk and event["sequence"] == 1
    rest = feed.get("/api/v1/events", {"after": first["next_cursor"]}).json()
    assert [event["type"] for event in rest["events"]] == ["listing.status_changed"]
    nothing = feed.get("/api/v1/events", {"after": rest["next_cursor"]}).json()
    assert nothing == {"events": [], "next_cursor": rest["next_cursor"]}
    theirs = APIClient()
    theirs.credentials(HTTP_AUTHORIZATION=f"Token {other_key}")
    assert all(event["client"] == "other" for event in theirs.get("/api/v1/events").json()["events"])
    assert feed.get("/api/v1/events", {"after": -1}).status_code == 400
