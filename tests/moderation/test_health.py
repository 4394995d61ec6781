import time

import pytest
from rest_framework.test import APIClient

from moderation.selectors import health

pytestmark = pytest.mark.django_db

HEALTH = "/api/v1/health"


@pytest.fixture
def worker_answers(monkeypatch):
    monkeypatch.setattr(health, "check_workers", lambda timeout: {"ok": True, "count": 1, "names": ["w@host"]})


def test_all_ok_is_200_for_anonymous_callers(worker_answers, active_model):
    client = APIClient()
    # A stale or bogus token must not turn a health probe into a 401.
    client.credentials(HTTP_AUTHORIZATION="Token bogus")
    response = client.get(HEALTH)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["redis"]["ok"] and body["workers"]["ok"]
    assert body["model"] == {"ok": True, "version": "v0001"}


def test_no_active_model_is_503_and_says_so(worker_answers):
    response = APIClient().get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["model"]["ok"] is False and "pending" in body["model"]["detail"]
    assert body["database"]["ok"] and body["redis"]["ok"]


def test_unreachable_redis_is_503_quickly(settings, active_model):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    started = time.monotonic()
    response = APIClient().get(HEALTH)
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    body = response.json()
    assert body["redis"]["ok"] is False and "Error" in body["redis"]["detail"]
    assert body["workers"]["ok"] is False


def test_no_worker_answering_the_ping_is_not_ok(settings):
    # A Redis database no worker listens on: the ping must give up after its timeout.
    from tests.support.workers import SILENT_DB, point_celery_at, redis_url

    original = point_celery_at(redis_url(SILENT_DB))
    try:
        started = time.monotonic()
        result = health.check_workers(timeout=0.3)
    finally:
        point_celery_at(original)
    assert result["ok"] is False and result["count"] == 0
    assert time.monotonic() - started < 5


def test_database_failure_is_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("connection refused")

    monkeypatch.setattr(health.ListingImage.objects, "filter", broken)
    result = health.check_database()
    assert result["ok"] is False and "connection refused" in result["detail"]
