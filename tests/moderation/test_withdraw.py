"""A marketplace adds photos to a listing or withdraws it: added photos are scored like the first ones; a withdrawn
listing's undecided photos leave the pipeline, while decisions and training examples stay."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from moderation.models import Event, EventType, ImageStatus, ListingImage, ListingStatus, TrainingExample
from moderation.selectors.queue import queue_page
from moderation.services import review, scoring
from moderation.services.listings import withdraw_listing
from tests.support import images
from tests.support.factories import make_api_key, make_flagged, make_moderator
from tests.support.scoring import never_audit

pytestmark = pytest.mark.django_db

LISTINGS = "/api/v1/listings"


@pytest.fixture
def api(media_root, published):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(get_user_model().objects.create_user('api'))}")
    return client


def test_added_photos_are_stored_and_queued_and_a_retry_adds_nothing(api, queued, django_capture_on_commit_callbacks):
    listing_id = api.post(LISTINGS, {"external_id": "ad-1", "images": [images.upload(images.jpeg_bytes())]}).json()[
        "id"
    ]
    more = {"images": [images.upload(images.png_bytes()), images.upload(images.webp_bytes(), name="c.webp")]}
    with django_capture_on_commit_callbacks(execute=True):
        added = api.post(f"{LISTINGS}/{listing_id}/images", more, format="multipart", headers={"Idempotency-Key": "a1"})
    assert added.status_code == 201, added.content
    assert [image["status"] for image in added.json()["images"]] == ["pending"] * 3
    again = api.post(
        f"{LISTINGS}/{listing_id}/images",
        {"images": [images.upload(images.png_bytes()), images.upload(images.webp_bytes(), name="c.webp")]},
        format="multipart",
        headers={"Idempotency-Key": "a1"},
    )
    assert again.status_code == 200 and ListingImage.objects.count() == 3
    assert queued[-1] == [image["id"] for image in added.json()["images"][1:]]
    empty = api.post(f"{LISTINGS}/{listing_id}/images", {}, format="multipart")
    assert empty.status_code == 400 and empty.json()["error"] == "invalid"


def test_withdrawing_takes_undecided_photos_out_and_keeps_decisions(api, fake_scorer, active_model):
    moderator = make_moderator()
    flagged = make_flagged(0.9, with_file=True)
    listing = flagged.listing
    decided = make_flagged(0.95, listing=listing, with_file=True)
    pending = ListingImage.objects.create(listing=listing, sha256="f" * 64, status=ImageStatus.PENDING)
    review.claim_item(user=moderator, image_id=decided.pk)
    decision = review.decide(user=moderator, image_id=decided.pk, outcome="confirm")
    review.claim_item(user=moderator, image_id=flagged.pk)
    examples = TrainingExample.objects.count()

    response = api.delete(f"{LISTINGS}/{listing.pk}")
    assert response.status_code == 404  # another client's listing: the desk's own
    withdrawn = withdraw_listing(listing_id=listing.pk)
    assert withdrawn.status == ListingStatus.WITHDRAWN and withdrawn.withdrawn_at is not None
    flagged.refresh_from_db()
    pending.refresh_from_db()
    decided.refresh_from_db()
    assert (flagged.status, flagged.claimed_by) == (ImageStatus.WITHDRAWN, None)
    assert pending.status == ImageStatus.WITHDRAWN and decided.status == ImageStatus.CONFIRMED
    assert queue_page().items == []
    assert decision.image.decisions.get().undone_at is None and TrainingExample.objects.count() == examples
    # Scoring passes it by, and a second withdrawal changes nothing.
    outcome = scoring.score_batch(image_ids=[pending.pk], scorer=fake_scorer, rng=never_audit)
    assert outcome.scored == [] and ListingImage.objects.get(pk=pending.pk).status == ImageStatus.WITHDRAWN
    changes = Event.objects.filter(listing=listing, type=EventType.LISTING_STATUS_CHANGED).count()
    withdraw_listing(listing_id=listing.pk)
    assert Event.objects.filter(listing=listing, type=EventType.LISTING_STATUS_CHANGED).count() == changes
    last = Event.objects.filter(listing=listing).order_by("-sequence").first()
    assert last.data == {"from": ListingStatus.TAKEN_DOWN, "to": ListingStatus.WITHDRAWN}


def test_a_withdrawn_listing_through_the_api_takes_no_more_photos(api):
    listing_id = api.post(LISTINGS, {"external_id": "ad-2", "images": [images.upload(images.jpeg_bytes())]}).json()[
        "id"
    ]
    gone = api.delete(f"{LISTINGS}/{listing_id}")
    assert gone.status_code == 200 and gone.json()["status"] == "withdrawn"
    assert [image["status"] for image in gone.json()["images"]] == ["withdrawn"]
    assert api.delete(f"{LISTINGS}/{listing_id}").status_code == 200
    more = api.post(f"{LISTINGS}/{listing_id}/images", {"images": [images.upload(images.png_bytes())]})
    assert more.status_code == 409 and more.json()["error"] == "listing_withdrawn"
    assert ListingImage.objects.count() == 1
