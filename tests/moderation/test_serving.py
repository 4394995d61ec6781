"""The serving report: what scoring processes write to Redis, what the selector makes of it, where admins see it."""

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import redis
from django.test import Client
from django.urls import reverse

from moderation import worker
from moderation.models import ModelVersion
from moderation.selectors import health
from moderation.selectors.serving import SERVING_KEY, serving_report, serving_workers
from tests.support.workers import SERVING_DB, redis_url

# A Redis database of its own: the real-worker tests use 9 and 10, the health test 14, the benchmarks 8 and 12.
SERVING_REDIS_URL = redis_url(SERVING_DB)


@pytest.fixture
def store(settings, monkeypatch):
    """The Redis the report lives in, emptied of it before and after; the worker's cached client is reset."""
    settings.CELERY_BROKER_URL = SERVING_REDIS_URL
    monkeypatch.setattr(worker, "_redis", None)
    monkeypatch.setattr(worker, "_report_failing", False)
    client = redis.Redis.from_url(SERVING_REDIS_URL)
    client.delete(SERVING_KEY)
    yield client
    client.delete(SERVING_KEY)
    client.close()


def status(version, *, host="host-a", pid=101, heartbeat=10.0, failed=None, since=None, node="scoring@host-a"):
    """What `Scorer.status()` returns in a worker process."""
    return {
        "version": version,
        "since": since if since is not None else time.time() - 30,
        "load_seconds": 1.25,
        "pointer_mtime": time.time() - 31,
        "failed": failed or {},
        "heartbeat_seconds": heartbeat,
        "hostname": host,
        "pid": pid,
        "node": node,
    }


def put(client, entry: dict, seen_ago: float) -> None:
    """Store an entry as a worker would have `seen_ago` seconds ago."""
    value = {**entry, "seen_at": time.time() - seen_ago}
    client.hset(SERVING_KEY, f"{entry['hostname']}:{entry['pid']}", json.dumps(value))


@pytest.fixture
def active(db):
    """v0002 active since a minute ago, v0001 before it."""
    ModelVersion.objects.create(version="v0001", labels=["ok", "bad"], prohibited_labels=["bad"])
    return ModelVersion.objects.create(
        version="v0002",
        labels=["ok", "bad"],
        prohibited_labels=["bad"],
        is_active=True,
        activated_at=datetime.now(UTC) - timedelta(seconds=60),
    )


# ---------------------------------------------------------------------------------------------------- writer


@pytest.mark.django_db
def test_a_published_status_reads_back_as_a_live_worker(store):
    since = time.time() - 12
    worker.publish_serving_status(status("v0002", host="box-1", pid=7, since=since))

    raw = json.loads(store.hget(SERVING_KEY, "box-1:7"))
    assert raw["version"] == "v0002" and abs(raw["seen_at"] - time.time()) < 60
    [entry] = serving_workers()
    assert (entry.host, entry.pid, entry.node, entry.version) == ("box-1", 7, "scoring@host-a", "v0002")
    assert entry.since == datetime.fromtimestamp(since, tz=UTC)
    assert entry.load_seconds == 1.25 and entry.age_seconds < 60
    assert 0 < store.ttl(SERVING_KEY) <= worker.SERVING_PRUNE_SECONDS


@pytest.mark.django_db
def test_publishing_removes_entries_of_processes_long_gone(store):
    put(store, status("v0001", host="old", pid=1), seen_ago=worker.SERVING_PRUNE_SECONDS + 60)
    put(store, status("v0001", host="quiet", pid=2), seen_ago=45)
    worker.publish_serving_status(status("v0002", host="new", pid=3))
    assert set(store.hkeys(SERVING_KEY)) == {b"quiet:2", b"new:3"}


def test_an_unreachable_redis_is_logged_once_and_never_raised(settings, monkeypatch, caplog):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(worker, "_redis", None)
    monkeypatch.setattr(worker, "_report_failing", False)
    with caplog.at_level(logging.WARNING, logger="moderation.worker"):
        worker.publish_serving_status(status("v0002"))
        worker.publish_serving_status(status("v0002"))
    warnings = [record for record in caplog.records if "cannot report the serving model" in record.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("queues", "pool", "watch_in_parent", "watch_in_child"),
    [
        ({"scoring", "default"}, "prefork", False, True),
        ({"scoring"}, "solo", True, True),
        ({"scoring", "default"}, "threads", True, True),
        ({"training"}, "prefork", False, False),
        ({"training"}, "solo", False, False),
    ],
)
def test_only_processes_that_score_and_never_fork_start_a_watcher(
    queues, pool, watch_in_parent, watch_in_child, monkeypatch
):
    for name in ("_watch_scoring", "_pool_forks", "_worker_pid", "_node_name"):
        monkeypatch.setattr(worker, name, getattr(worker, name))
    added = []
    selected = SimpleNamespace(consume_from=dict.fromkeys(queues), select_add=added.append)
    sender = SimpleNamespace(
        app=SimpleNamespace(amqp=SimpleNamespace(queues=selected)), pool_cls=pool, hostname="w@host"
    )
    worker._note_scoring_worker(sender=sender)
    assert worker._may_watch_here() is watch_in_parent
    monkeypatch.setattr(worker, "_worker_pid", worker._worker_pid + 1)  # as seen from a forked child
    assert worker._may_watch_here() is watch_in_child
    # A scoring worker also answers the calls of /api/v1/score; no other worker does.
    assert added == (["interactive"] if "scoring" in queues else [])


# ---------------------------------------------------------------------------------------------------- selector


@pytest.mark.django_db
def test_stale_and_unreadable_entries_are_ignored(store):
    put(store, status("v0002", host="fresh", pid=1), seen_ago=2)
    put(store, status("v0002", host="dead", pid=2), seen_ago=31)  # three 10 s heartbeats missed
    put(store, status("v0002", host="fast-dead", pid=3, heartbeat=2.0), seen_ago=7)  # three 2 s heartbeats
    put(store, status("v0002", host="fast-alive", pid=4, heartbeat=2.0), seen_ago=5)
    store.hset(SERVING_KEY, "garbage:5", b"not json")
    live = serving_workers()
    assert [(entry.host, entry.pid) for entry in live] == [("fast-alive", 4), ("fresh", 1)]
    assert all(entry.version == "v0002" for entry in live)


@pytest.mark.django_db
def test_agreeing_workers_give_one_line_and_no_warning(store, active):
    put(store, status("v0002", host="a", pid=1), seen_ago=1)
    put(store, status("v0002", host="b", pid=2), seen_ago=4)
    report = serving_report()
    assert report.error == "" and report.warnings == []
    assert report.versions == {"v0002": 2} and report.active_version == "v0002"
    assert 4 <= report.as_of_seconds < 30


@pytest.mark.django_db
def test_disagreement_and_a_lagging_worker_are_warned_about(store, active):
    put(store, status("v0002", host="a", pid=1), seen_ago=1)
    put(store, status("v0001", host="b", pid=2, failed={"v0002": "model.keras does not match its sha256"}), seen_ago=1)
    report = serving_report()
    assert report.versions == {"v0002": 1, "v0001": 1}
    assert report.warnings[0] == "Workers disagree: v0002 in 1 worker process, v0001 in 1 worker process."
    assert report.warnings[1].startswith("b:2 serves v0001, not the active v0002, 60 s after its activation")
    assert "v0002 failed to load (model.keras does not match its sha256)" in report.warnings[1]
    assert len(report.warnings) == 2


@pytest.mark.django_db
def test_a_worker_still_switching_within_the_grace_period_is_not_lagging(store, active):
    put(store, status("v0001", host="b", pid=2), seen_ago=1)
    activated = active.activated_at.timestamp()
    assert serving_report(now=activated + 5).warnings == []
    late = serving_report(now=activated + 11).warnings
    assert late == ["b:2 serves v0001, not the active v0002, 11 s after its activation."]


@pytest.mark.django_db
def test_no_report_while_a_model_is_active_is_a_warning(store, active):
    report = serving_report()
    assert report.workers == [] and report.versions == {}
    assert report.warnings == ["No scoring worker has reported in the last 30 s."]


@pytest.mark.django_db
def test_an_unreachable_redis_makes_the_report_say_so(settings, active):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    report = serving_report(timeout=0.3)
    assert report.workers == [] and "unavailable" in report.error


# ---------------------------------------------------------------------------------------------------- pages


@pytest.fixture
def admin_client(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("boss", is_superuser=True, is_staff=True))
    return client


@pytest.mark.django_db
def test_the_versions_page_shows_what_workers_serve_and_warns(store, active, admin_client):
    put(store, status("v0002", host="a", pid=1), seen_ago=2)
    put(store, status("v0002", host="b", pid=2), seen_ago=3)
    page = admin_client.get(reverse("model-versions")).content.decode()
    assert "Serving: <strong>v0002</strong> in 2 worker processes" in page
    assert re.search(r"\(as of \d+ s ago\)", page)
    assert "alert warning" not in page

    put(store, status("v0001", host="b", pid=2), seen_ago=1)
    page = admin_client.get(reverse("model-versions")).content.decode()
    assert "<strong>v0002</strong> in 1 worker process, <strong>v0001</strong> in 1 worker process" in page
    assert "Workers disagree: v0002 in 1 worker process, v0001 in 1 worker process." in page
    assert "b:2 serves v0001, not the active v0002" in page


@pytest.mark.django_db
def test_the_versions_page_still_opens_without_redis(settings, active, admin_client):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = admin_client.get(reverse("model-versions"))
    assert response.status_code == 200
    assert "The serving report is unavailable" in response.content.decode()


@pytest.mark.django_db
def test_health_lists_the_serving_workers_without_failing_on_disagreement(store, active, monkeypatch, admin_client):
    monkeypatch.setattr(health, "check_workers", lambda timeout: {"ok": True, "count": 2, "names": ["w@host"]})
    put(store, status("v0002", host="a", pid=1), seen_ago=1)
    put(store, status("v0001", host="b", pid=2), seen_ago=1)
    response = admin_client.get("/api/v1/health")
    assert response.status_code == 200, response.content
    serving = response.json()["serving"]
    assert [(w["host"], w["pid"], w["version"]) for w in serving["workers"]] == [("a", 1, "v0002"), ("b", 2, "v0001")]
    assert serving["active_version"] == "v0002" and serving["versions"] == {"v0002": 1, "v0001": 1}
    assert serving["warnings"][0].startswith("Workers disagree")
    assert all(key in serving["workers"][0] for key in ("since", "load_seconds", "age_seconds"))
