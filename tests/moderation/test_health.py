"""Health: live without dependencies, ready from cheap checks and the workers' own reports, details only for
staff and clients, never throttled, never hanging."""

import json
import time

import pytest
import redis
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from moderation import worker
from moderation.selectors import health
from moderation.selectors.serving import SERVING_KEY
from tests.support.factories import make_api_key
from tests.support.workers import SERVING_DB, SILENT_DB, point_celery_at, redis_url

pytestmark = pytest.mark.django_db

HEALTH = "/api/v1/health"
LIVE = "/api/v1/health/live"
READY = "/api/v1/health/ready"
BROKEN_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def worker_answers(monkeypatch):
    monkeypatch.setattr(health, "check_workers", lambda timeout: {"ok": True, "count": 1, "names": ["w@host"]})


@pytest.fixture
def staff():
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("ops", password="pw-ops-1", is_staff=True))
    return client


@pytest.fixture
def marketplace():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(get_user_model().objects.create_user('acme-api'))}")
    return client


@pytest.fixture
def reports(settings, monkeypatch):
    """The Redis the scoring processes report to, emptied before and after."""
    settings.CELERY_BROKER_URL = redis_url(SERVING_DB)
    store = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    store.delete(SERVING_KEY)
    yield store
    store.delete(SERVING_KEY)
    store.close()


def report(store, *, node: str, pid: int, seen_ago: float) -> None:
    """A scoring process's report as `moderation.worker` writes it, `seen_ago` seconds ago."""
    entry = {"version": "v0001", "hostname": "host-a", "pid": pid, "node": node, "heartbeat_seconds": 10.0}
    store.hset(SERVING_KEY, f"host-a:{pid}", json.dumps({**entry, "seen_at": time.time() - seen_ago}))


def test_anonymous_callers_get_a_status_word_even_with_a_bogus_token(worker_answers, active_model):
    client = APIClient()
    # A stale or bogus token must not turn a health probe into a 401.
    client.credentials(HTTP_AUTHORIZATION="Token bogus")
    for path in (HEALTH, READY, LIVE):
        response = client.get(path)
        assert (response.status_code, response.json()) == (200, {"status": "ok"}), path


@pytest.mark.parametrize("caller", ["staff", "marketplace"])
def test_staff_and_clients_get_the_details(worker_answers, active_model, caller, request):
    client = request.getfixturevalue(caller)
    body = client.get(HEALTH).json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["redis"]["ok"] and body["workers"]["ok"]
    assert body["database"]["pending_images"] == 0
    assert body["model"] == {"ok": True, "version": "v0001"}
    assert "serving" in body and "webhooks" in body
    ready = client.get(READY).json()
    assert set(ready) == {"status", "database", "redis", "workers", "model"}
    assert "pending_images" not in ready["database"]  # readiness never counts a table


def test_a_moderator_session_is_not_enough_for_details(worker_answers, active_model):
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("mod", password="pw-mod-1"))
    assert client.get(HEALTH).json() == {"status": "ok"}


def test_no_active_model_is_503_and_says_so_to_staff(worker_answers, staff):
    assert APIClient().get(READY).status_code == 503
    response = staff.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["model"]["ok"] is False and "pending" in body["model"]["detail"]
    assert body["database"]["ok"] and body["redis"]["ok"]


def test_unreachable_redis_is_503_quickly_and_anonymous_callers_learn_nothing_more(settings, active_model, staff):
    settings.CELERY_BROKER_URL = BROKEN_REDIS
    started = time.monotonic()
    anonymous = APIClient().get(READY)
    detailed = staff.get(HEALTH)
    assert time.monotonic() - started < 5
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "unavailable"})
    body = detailed.json()
    assert detailed.status_code == 503
    assert body["redis"]["ok"] is False and "Error" in body["redis"]["detail"]
    assert body["workers"]["ok"] is False


def test_live_asks_nothing(settings, monkeypatch):
    settings.CELERY_BROKER_URL = BROKEN_REDIS

    def refuse(*args, **kwargs):
        raise AssertionError("liveness asked a dependency")

    monkeypatch.setattr(health, "check_database", refuse)
    monkeypatch.setattr(health, "check_redis", refuse)
    assert APIClient().get(LIVE).status_code == 200


def test_workers_are_read_from_their_reports_never_pinged(reports, active_model, staff, monkeypatch):
    from moderation.celery import app

    def no_broadcast(*args, **kwargs):
        raise AssertionError("a probe broadcast to the workers")

    monkeypatch.setattr(app.control, "inspect", no_broadcast)
    monkeypatch.setattr(worker, "_redis", None)
    assert staff.get(READY).json()["workers"]["ok"] is False  # nobody has reported

    report(reports, node="scoring@host-a", pid=101, seen_ago=2)
    report(reports, node="scoring@host-a", pid=102, seen_ago=5)
    report(reports, node="gone@host-a", pid=103, seen_ago=120)  # a process that stopped reporting
    response = staff.get(READY)
    assert response.status_code == 200
    assert response.json()["workers"] == {"ok": True, "count": 2, "names": ["scoring@host-a"]}


def test_no_recent_report_is_not_ok():
    original = point_celery_at(redis_url(SILENT_DB))
    try:
        result = health.check_workers(timeout=0.3)
    finally:
        point_celery_at(original)
    assert result["ok"] is False and result["count"] == 0 and "No scoring worker" in result["detail"]


def test_database_failure_is_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("connection refused")

    monkeypatch.setattr(health.ListingImage.objects, "filter", broken)
    result = health.check_database()
    assert result["ok"] is False and "connection refused" in result["detail"]
