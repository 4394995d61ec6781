"""`POST /api/v1/listings/{id}/appeals` and the appeals in `GET /api/v1/listings/{id}`."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient

from moderation.models import Appeal, Client, Event, EventType, Listing
from moderation.services import appeals, review
from tests.support.factories import make_api_key, make_flagged, make_moderator, taken_down_listing

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    user = get_user_model().objects.create_user("marketplace-api", password="pw-for-tests-only")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(user, client_name='marketplace')}")
    return client


@pytest.fixture
def listing(api, moderator, media_root, active_model):
    return taken_down_listing(moderator=moderator, client=Client.objects.get(name="marketplace"))


def appeal_url(listing_id: int) -> str:
    return reverse("api-listing-appeals", args=[listing_id])


def post_appeal(api, listing_id, text="The coat is a costume piece.", **extra):
    return api.post(appeal_url(listing_id), {"text": text}, format="json", **extra)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["detail"]
    return body


def test_url():
    assert appeal_url(7) == "/api/v1/listings/7/appeals"


def test_filing_answers_201_with_the_appeal_and_writes_the_event(api, listing, frozen_clock):
    response = post_appeal(api, listing.pk)
    assert response.status_code == 201, response.content
    body = response.json()
    appeal = Appeal.objects.get()
    image_ids = [image.pk for image in listing.images.all()]
    assert body == {
        "id": appeal.pk,
        "listing_id": listing.pk,
        "status": "open",
        "contested_image_ids": image_ids,
        "created_at": body["created_at"],
        "decided_at": None,
        "note": "",
    }
    assert appeal.text == "The coat is a costume piece."
    event = Event.objects.get(type=EventType.APPEAL_RECEIVED)
    assert event.listing_id == listing.pk and event.data["appeal_id"] == appeal.pk
    assert event.data["contested_image_ids"] == image_ids


def test_a_form_body_is_accepted_too(api, listing):
    response = api.post(appeal_url(listing.pk), {"text": "Please look again."})
    assert response.status_code == 201, response.content
    assert Appeal.objects.get().text == "Please look again."


def test_a_live_listing_answers_409_nothing_to_appeal(api, moderator, media_root, active_model):
    live = Listing.objects.create(client=Client.objects.get(name="marketplace"), external_id="ad-live")
    image = make_flagged(listing=live)
    review.claim_item(user=moderator, image_id=image.pk)
    review.decide(user=moderator, image_id=image.pk, outcome="reject")
    assert Listing.objects.get(pk=live.pk).status == "live"
    assert_error(post_appeal(api, live.pk), 409, "nothing_to_appeal")
    assert not Appeal.objects.exists()


def test_an_expired_window_answers_409_with_when_it_closed(frozen_clock, api, listing):
    frozen_clock.advance(days=184)
    body = assert_error(post_appeal(api, listing.pk), 409, "appeal_window_closed")
    assert body["window_closed_at"].startswith(str(frozen_clock.current.year))
    assert not Appeal.objects.exists()


def test_a_second_appeal_answers_409_with_the_first_appeals_id(api, listing):
    first = post_appeal(api, listing.pk).json()
    body = assert_error(post_appeal(api, listing.pk, text="And again."), 409, "already_appealed")
    assert body["appeal_id"] == first["id"]
    assert Appeal.objects.count() == 1


@pytest.mark.parametrize("text", ["", "   ", "x" * 5001])
def test_empty_or_overlong_text_answers_400(api, listing, text):
    assert_error(post_appeal(api, listing.pk, text=text), 400, "invalid")
    assert not Appeal.objects.exists()


def test_a_missing_text_answers_400(api, listing):
    assert_error(api.post(appeal_url(listing.pk), {}, format="json"), 400, "invalid")


def test_another_clients_listing_answers_404_and_stores_nothing(api, moderator, media_root, active_model):
    theirs = taken_down_listing(moderator=moderator, client=Client.objects.create(name="other-site"))
    assert_error(post_appeal(api, theirs.pk), 404, "not_found")
    assert_error(post_appeal(api, 999_999), 404, "not_found")
    assert not Appeal.objects.exists()


def test_a_retry_with_the_same_idempotency_key_answers_200_with_the_same_appeal(api, listing):
    first = post_appeal(api, listing.pk, HTTP_IDEMPOTENCY_KEY="appeal-1")
    again = post_appeal(api, listing.pk, HTTP_IDEMPOTENCY_KEY="appeal-1")
    assert first.status_code == 201 and again.status_code == 200, again.content
    assert again.json() == first.json()
    assert Appeal.objects.count() == 1
    assert Event.objects.filter(type=EventType.APPEAL_RECEIVED).count() == 1
    other = post_appeal(api, listing.pk, text="Other text.", HTTP_IDEMPOTENCY_KEY="appeal-1")
    assert_error(other, 409, "idempotency_key_reused")


def test_the_listing_shows_its_appeals_and_the_overturn(api, listing):
    appeal_id = post_appeal(api, listing.pk).json()["id"]
    shown = api.get(reverse("api-listing-detail", args=[listing.pk])).json()
    assert [(a["id"], a["status"], a["decided_at"]) for a in shown["appeals"]] == [(appeal_id, "open", None)]
    appeals.decide_appeal(appeal_id=appeal_id, user=make_moderator(), outcome="overturn", note="A costume: allowed.")
    shown = api.get(reverse("api-listing-detail", args=[listing.pk])).json()
    assert shown["status"] == "live"
    (appeal,) = shown["appeals"]
    assert appeal["status"] == "overturned" and appeal["decided_at"] and appeal["note"] == "A costume: allowed."
    decisions = shown["images"][0]["decisions"]
    assert [(d["outcome"], d["overturned"], d["via_appeal"]) for d in decisions] == [
        ("confirm", True, False),
        ("reject", False, True),
    ]


def test_the_schema_documents_the_endpoint_with_examples():
    schema = APIClient().get("/api/schema", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/listings/{listing_id}/appeals"]["post"]
    assert operation["operationId"] == "file_appeal"
    assert {"200", "201", "400", "401", "404", "409"} <= set(operation["responses"])
    assert set(operation["requestBody"]["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    assert operation["requestBody"]["content"]["application/json"]["examples"]
    assert operation["responses"]["201"]["content"]["application/json"]["examples"]
    assert set(operation["responses"]["409"]["content"]["application/json"]["examples"]) >= {
        "AlreadyAppealed",
        "WindowClosed",
        "NothingToAppeal",
    }
    text = schema["components"]["schemas"]["AppealCreate"]["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, 5000)
