"""Abuse limits and least privilege: per-client rates with JSON 429 and Retry-After, a lower one for scoring, login
lockouts per user and address, bodies refused from Content-Length before they are read, and roles that cannot grant
themselves more."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client as BrowserClient
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from moderation.permissions import ensure_groups
from tests.support import images
from tests.support.factories import make_api_key

pytestmark = pytest.mark.django_db


def keyed(username: str, client: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(get_user_model().objects.create_user(username), client)}")
    return api


@pytest.fixture
def rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"client": "3/min", "score": "1/min", "anonymous": "2/min"},
    }
    from rest_framework.settings import api_settings

    api_settings.reload()
    yield
    api_settings.reload()


def test_each_client_has_its_own_rate_and_over_it_gets_json_429_with_retry_after(rates):
    acme, other = keyed("acme-api", "acme"), keyed("other-api", "other")
    assert [acme.get("/api/v1/listings").status_code for _ in range(3)] == [200, 200, 200]
    refused = acme.get("/api/v1/listings")
    assert refused.status_code == 429 and refused.json()["error"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    assert other.get("/api/v1/listings").status_code == 200  # another client is not slowed down


def test_scoring_has_a_much_lower_rate_of_its_own(rates, monkeypatch, calls_in_process):
    from moderation import worker

    class Scorer:
        def predict(self, payloads):
            from tests.support.scoring import FakePrediction

            return FakePrediction("v0001", [{"allowed": 0.9, "weapon": 0.1}])

    monkeypatch.setattr(worker, "get_scorer", Scorer)
    acme = keyed("acme-api", "acme")
    first = acme.post("/api/v1/score", {"image": images.upload(images.png_bytes())}, format="multipart")
    second = acme.post("/api/v1/score", {"image": images.upload(images.png_bytes())}, format="multipart")
    assert (first.status_code, second.status_code) == (200, 429)
    assert acme.get("/api/v1/listings").status_code == 200


def test_health_probes_are_never_throttled(rates, monkeypatch, active_model):
    from moderation.selectors import health

    monkeypatch.setattr(health, "check_workers", lambda timeout: {"ok": True, "count": 1, "names": ["w@host"]})
    anonymous = APIClient()
    # A load balancer probes often from one address; a 429 would take the desk out of rotation.
    statuses = {anonymous.get(path).status_code for path in ("/api/v1/health/live", "/api/v1/health/ready") * 5}
    assert statuses == {200}


def test_an_unreachable_rate_store_lets_requests_through(rates, monkeypatch):
    from django.core.cache import cache

    def down(*args, **kwargs):
        raise ConnectionError("Redis is restarting")

    monkeypatch.setattr(cache, "get", down)
    acme = keyed("acme-api", "acme")
    assert [acme.get("/api/v1/listings").status_code for _ in range(5)] == [200] * 5


def test_login_attempts_are_locked_out_per_user_after_the_limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    get_user_model().objects.create_user("mod", password="right-password-1")
    browser = BrowserClient()
    for _ in range(3):
        assert browser.post(reverse("login"), {"username": "mod", "password": "wrong"}).status_code in (200, 429)
    locked = browser.post(reverse("login"), {"username": "mod", "password": "right-password-1"})
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.content.decode()
    # Another address trying the same account is locked out too: the limit is per user as well as per address.
    elsewhere = BrowserClient(REMOTE_ADDR="198.51.100.20")
    assert elsewhere.post(reverse("login"), {"username": "mod", "password": "right-password-1"}).status_code == 429


class Unreadable(io.RawIOBase):
    """A request body that fails the test if anyone reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readinto = read


def test_a_body_over_the_limit_is_refused_from_content_length_before_it_is_read(settings):
    environ = RequestFactory().post("/api/v1/listings").environ
    environ.update({"CONTENT_LENGTH": str(settings.VIGIA_MAX_REQUEST_BYTES + 1), "wsgi.input": Unreadable()})
    started = []
    response = WSGIHandler()(environ, lambda status, headers: started.append(status))
    assert started and started[0].startswith("413 ")
    assert b'"error": "too_large"' in b"".join(response)


def test_a_body_that_streams_past_the_limit_is_cut_off(settings, media_root):
    """The upload handler counts what arrives, whatever Content-Length said (a proxy passing a chunked body)."""
    from moderation.api.listings import ListingCollectionView

    settings.VIGIA_MAX_REQUEST_BYTES = 20_000
    user = get_user_model().objects.create_user("api")
    request = RequestFactory().post(
        "/api/v1/listings",
        {"external_id": "big", "images": [images.upload(images.png_bytes(size=(400, 400)) + b"\0" * 40_000)]},
        HTTP_AUTHORIZATION=f"Token {make_api_key(user)}",
    )
    response = ListingCollectionView.as_view()(request)
    assert response.status_code == 413 and response.data["error"] == "too_large"


def test_admins_manage_thresholds_training_and_clients_but_not_accounts_or_keys():
    _, admins = ensure_groups()
    granted = set(admins.permissions.values_list("content_type__app_label", "codename"))
    assert not {(app, code) for app, code in granted if app == "auth"}
    assert not {code for _, code in granted if code.endswith("clientkey")}
    assert ("moderation", "change_moderationsettings") in granted and ("moderation", "change_client") in granted
    assert Permission.objects.filter(codename="change_user").exists()


def test_sessions_end_after_the_idle_time_and_every_request_renews_them(settings):
    assert settings.SESSION_COOKIE_AGE == 3600 and settings.SESSION_SAVE_EVERY_REQUEST
