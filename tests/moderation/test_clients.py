"""Clients and their keys: a key authenticates for its client only, is refused once revoked, expired or its client
disabled, and a client never sees another client's listings (404, like an unknown id)."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from moderation.models import Client, ClientKey, Listing
from moderation.services.clients import get_or_create_client, issue_key, revoke_key
from tests.support import images
from tests.support.factories import make_api_key, store_listing

pytestmark = pytest.mark.django_db

LISTINGS = "/api/v1/listings"


def api(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def post(client: APIClient, external_id: str, photo: bytes | None = None, **headers):
    data = {"external_id": external_id, "images": [images.upload(photo or images.jpeg_bytes())]}
    return client.post(LISTINGS, data, format="multipart", headers=headers)


@pytest.fixture
def two_clients(media_root, published):
    users = get_user_model().objects
    acme = make_api_key(users.create_user("acme-api"), "acme")
    other = make_api_key(users.create_user("other-api"), "other")
    return api(acme), api(other)


def test_a_client_never_sees_another_clients_listings(two_clients):
    acme, other = two_clients
    listing_id = post(acme, "ad-1").json()["id"]
    for response in (
        other.get(f"{LISTINGS}/{listing_id}"),
        other.delete(f"{LISTINGS}/{listing_id}"),
        other.post(
            f"{LISTINGS}/{listing_id}/images", {"images": [images.upload(images.png_bytes())]}, format="multipart"
        ),
        acme.get(f"{LISTINGS}/999999"),
    ):
        assert response.status_code == 404, response.content
        assert response.json()["error"] == "not_found"
    assert other.get(LISTINGS).json()["results"] == []
    assert [row["id"] for row in acme.get(LISTINGS).json()["results"]] == [listing_id]
    assert Listing.objects.get().withdrawn_at is None  # the other client's DELETE changed nothing


def test_the_same_external_id_is_independent_per_client(two_clients):
    acme, other = two_clients
    assert post(acme, "ad-1").status_code == 201
    assert post(other, "ad-1").status_code == 201
    assert {listing.client.name for listing in Listing.objects.all()} == {"acme", "other"}


def test_a_retry_after_a_lost_response_gets_the_same_listing_with_200(two_clients):
    acme, _ = two_clients
    photo = images.jpeg_bytes()
    first = post(acme, "ad-7", photo)
    retry = post(acme, "ad-7", photo)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    assert Listing.objects.count() == 1


def test_an_idempotency_key_is_honoured_and_a_reuse_for_another_request_is_409(two_clients):
    acme, _ = two_clients
    first = post(acme, "ad-8", **{"Idempotency-Key": "7f1c"})
    again = post(acme, "ad-8", **{"Idempotency-Key": "7f1c"})
    assert (first.status_code, again.status_code) == (201, 200) and again.json()["id"] == first.json()["id"]
    reused = post(acme, "ad-9", **{"Idempotency-Key": "7f1c"})
    assert reused.status_code == 409 and reused.json()["error"] == "idempotency_key_reused"
    assert not Listing.objects.filter(external_id="ad-9").exists()


def test_revoked_and_expired_keys_and_disabled_clients_are_refused(media_root, published):
    user = get_user_model().objects.create_user("api")
    client, _ = get_or_create_client(name="acme")
    revoked, revoked_key = issue_key(client=client, user=user, name="old")
    _, expired_key = issue_key(client=client, user=user, name="past", expires_at=timezone.now() - timedelta(days=1))
    _, live_key = issue_key(client=client, user=user, name="live")
    revoke_key(key_id=revoked.pk)
    for key, words in ((revoked_key, "revoked"), (expired_key, "expired"), ("not-a-key.at-all", "revoked")):
        response = api(key).get(LISTINGS)
        assert response.status_code == 401 and words in response.json()["detail"], response.content
    assert api(live_key).get(LISTINGS).status_code == 200
    assert ClientKey.objects.get(name="live").last_used_at is not None
    Client.objects.filter(pk=client.pk).update(is_active=False)
    response = api(live_key).get(LISTINGS)
    assert response.status_code == 401 and "disabled" in response.json()["detail"]


def test_the_listing_list_filters_and_pages_with_a_cursor(two_clients):
    acme, _ = two_clients
    ids = [post(acme, f"ad-{n}", images.jpeg_bytes(color=(n, 0, 0))).json()["id"] for n in range(5)]
    first = acme.get(LISTINGS, {"limit": 2}).json()
    assert [row["id"] for row in first["results"]] == ids[:-3:-1]
    second = acme.get(LISTINGS, {"limit": 2, "cursor": first["next_cursor"]}).json()
    third = acme.get(LISTINGS, {"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [row["id"] for row in second["results"] + third["results"]] == ids[2::-1]
    assert third["next_cursor"] is None
    assert [row["id"] for row in acme.get(LISTINGS, {"external_id": "ad-3"}).json()["results"]] == [ids[3]]
    assert acme.get(LISTINGS, {"status": "live"}).json()["results"] == []
    assert len(acme.get(LISTINGS, {"status": "pending"}).json()["results"]) == 5
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert acme.get(LISTINGS, {"created_after": later}).json()["results"] == []
    bad = acme.get(LISTINGS, {"status": "nonsense", "limit": 0})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid"


def test_the_desk_upload_page_files_listings_under_the_desk_client(media_root, published):
    listing = store_listing(external_id="hand-1", files=[images.upload(images.jpeg_bytes())])
    assert listing.client == Client.objects.desk()


def test_a_superuser_issues_a_key_shown_once_that_works_and_revokes_it(media_root, published):
    users = get_user_model().objects
    boss = users.create_superuser("root", password="pw-for-tests-only")
    browser = APIClient()
    browser.force_login(boss)
    created = browser.post(reverse("clients"), {"name": "acme-de", "description": "German site"})
    client = Client.objects.get(name="acme-de")
    assert created.status_code == 302 and created["Location"] == reverse("client-detail", args=[client.pk])
    page = browser.post(reverse("client-key-create", args=[client.pk]), {"name": "prod", "account": "acme-de-api"})
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    key = page.context["secret"]
    assert key in page.content.decode()
    assert key not in browser.get(reverse("client-detail", args=[client.pk])).content.decode()
    assert api(key).get(LISTINGS).status_code == 200
    stored = ClientKey.objects.get(client=client)
    browser.post(reverse("client-key-revoke", args=[client.pk, stored.prefix]))
    assert api(key).get(LISTINGS).status_code == 401


def test_a_key_may_not_act_as_a_staff_account(media_root):
    users = get_user_model().objects
    boss = users.create_superuser("root", password="pw-for-tests-only")
    users.create_user("staffer", is_staff=True)
    client, _ = get_or_create_client(name="acme")
    browser = APIClient()
    browser.force_login(boss)
    page = browser.post(reverse("client-key-create", args=[client.pk]), {"name": "x", "account": "staffer"})
    assert page.status_code == 400 and not ClientKey.objects.exists()
