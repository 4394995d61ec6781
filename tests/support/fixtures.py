"""Pytest fixtures shared by every test package (registered as a plugin in `tests/conftest.py`)."""

import pytest

from moderation import clock, outbox
from tests.support.published import Published


@pytest.fixture(scope="session", autouse=True)
def _flush_tried_again_after_a_deadlock():
    """A transactional test ends by emptying every table with one TRUNCATE, while a module's real worker may still
    be reading two of those tables in one transaction (its sweeper runs every second). PostgreSQL then breaks the
    deadlock by aborting one side, and when that is the TRUNCATE the test errors at teardown with nothing wrong in
    the code under test. The flush is tried again a few times, as the worker's side is by its next sweep."""
    import time

    from django.db import OperationalError
    from django.db.backends.base.operations import BaseDatabaseOperations

    flush = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(5):
            try:
                return flush(self, sql_list)
            except OperationalError as error:
                if "deadlock detected" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseDatabaseOperations, "execute_sql_flush", execute_sql_flush)
        yield


@pytest.fixture
def frozen_clock():
    """A clock the test moves by hand: `frozen_clock.advance(seconds=...)`."""
    from datetime import timedelta

    from django.utils import timezone

    class FrozenClock:
        """The app's clock, standing still until the test calls `advance`."""

        def __init__(self):
            self.current = timezone.now()

        def __call__(self):
            return self.current

        def advance(self, **delta):
            """Move the clock forward by `timedelta(**delta)`, e.g. past a claim's lease."""
            self.current += timedelta(**delta)

    fake = FrozenClock()
    clock.set_now(fake)
    yield fake
    clock.set_now(None)


@pytest.fixture
def moderator(db):
    """A moderator named "first": in the appeals tests, the one whose decisions are appealed."""
    from tests.support.factories import make_moderator

    return make_moderator("first")


@pytest.fixture
def reviewer(db):
    """A second moderator, "second", who may decide appeals of the first one's decisions."""
    from tests.support.factories import make_moderator

    return make_moderator("second")


@pytest.fixture
def calls_in_process():
    """Run `outbox.call`s (e.g. `/api/v1/score`'s) in this process, as Celery's eager mode does for task bodies."""
    from moderation.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def published(monkeypatch) -> Published:
    """Every task the outbox publishes in this test, recorded by name instead of sent to Redis."""
    recorder = Published()
    monkeypatch.setattr(outbox, "publish", recorder)
    return recorder


@pytest.fixture
def queued(published) -> list:
    """The id lists of the scoring tasks published (after commit)."""
    return published[outbox.SCORE_IMAGES]


@pytest.fixture
def fake_scorer():
    """A scorer that needs no model: red photos score high for "weapon"."""
    from tests.support.scoring import FakeScorer

    return FakeScorer()


@pytest.fixture
def media_root(settings, tmp_path):
    """MEDIA_ROOT in this test's temporary directory."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def audit_off(db):
    """No audit sampling: an image below the threshold is cleared, so routing is the threshold's alone."""
    from moderation.selectors.settings import get_settings

    row = get_settings()
    row.audit_rate = 0.0
    row.save()
    return row


@pytest.fixture
def active_model(db):
    """An active ModelVersion row ("allowed" and "weapon", the fake scorer's labels)."""
    from moderation.models import ModelVersion

    return ModelVersion.objects.create(
        version="v0001", labels=["allowed", "weapon"], prohibited_labels=["weapon"], is_active=True
    )


@pytest.fixture
def loop_settings(settings, tmp_path):
    """Media, registry and feature cache in a temporary directory; the tiny backbone with a short training."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIGIA_MODEL_REGISTRY = tmp_path / "models"
    settings.VIGIA_FEATURE_CACHE = tmp_path / "feature-cache"
    settings.VIGIA_BACKBONE = "tiny"
    settings.VIGIA_BACKBONE_WEIGHTS = ""
    settings.VIGIA_TRAINING_HPARAMS = {
        "image_size": 32,
        "epochs": 40,
        "early_stopping_patience": 40,
        "batch_size": 16,
        "learning_rate": 0.1,
    }
    settings.VIGIA_TRAINING_HEARTBEAT_SECONDS = 0.2
    return settings


@pytest.fixture
def rescores(monkeypatch) -> list:
    """Calls of the post-promotion re-scoring (recorded instead of queued)."""
    from moderation.services import model_versions

    calls: list[str] = []
    monkeypatch.setattr(model_versions, "_rescore_open_images", lambda: calls.append("rescore"))
    return calls


@pytest.fixture(scope="module")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real scoring worker (`scoring,default`, prefork, one child) with a trained `tiny` model and fault hooks.

    Faults (`tests/moderation/worker_faults.py`) are read from `worker.extra["faults"]` on every forward pass.
    """
    from tests.support import workers

    work = tmp_path_factory.mktemp("worker")
    faults = work / "faults.json"
    faults.write_text("{}")
    worker = workers.start_worker(
        queues=("scoring", "default"),
        db=workers.DELIVERY_DB,
        work=work,
        env={"VIGIA_TEST_FAULTS": str(faults), "VIGIA_PENDING_SWEEP_SECONDS": "1"},
        include=("tests.moderation.worker_faults",),
        name="delivery",
    )
    with workers.publishing_to(worker):
        # Trained while the worker boots; no task reaches it before the model is active.
        worker.extra["version"] = workers.train_tiny_version(worker.models, work / "backbone-cache")
        worker.extra["faults"] = faults
        workers.wait_ready(worker, timeout=40)
        yield worker


@pytest.fixture(scope="module")
def training_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker on the `training` queue (prefork, one child) against the test database.

    Training is made slow on purpose (many epochs of the tiny backbone) so a test can kill the child mid-run.
    """
    from tests.support import workers

    work = tmp_path_factory.mktemp("training-worker")
    worker = workers.start_worker(
        queues=("training",),
        db=workers.TRAINING_DB,
        work=work,
        env={
            "VIGIA_FEATURE_CACHE": str(work / "feature-cache"),
            "VIGIA_BACKBONE": "tiny",
            "VIGIA_TRAINING_HPARAMS": '{"image_size": 32, "epochs": 100000, "early_stopping_patience": 100000}',
            "VIGIA_TRAINING_HEARTBEAT_SECONDS": "0.5",
        },
        name="training",
    )
    with workers.publishing_to(worker):
        workers.wait_ready(worker, timeout=60)
        yield worker


@pytest.fixture
def local_webhooks(settings):
    """Webhooks may go to http:// and loopback (a test receiver), with a short timeout."""
    settings.VIGIA_WEBHOOK_ALLOW_HTTP = True
    settings.VIGIA_WEBHOOK_ALLOW_LOOPBACK = True
    settings.VIGIA_WEBHOOK_ALLOW_PRIVATE = False
    settings.VIGIA_WEBHOOK_TIMEOUT_SECONDS = 1.0
    return settings


@pytest.fixture
def receiver():
    """A real HTTP receiver on a free loopback port (`tests.support.receiver.Receiver`), stopped afterwards."""
    from moderation.services.webhooks import sending
    from tests.support.receiver import Receiver

    with Receiver() as running:
        yield running
    sending.close_connections()


@pytest.fixture(scope="module")
def webhooks_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker on the `webhooks` queue (threads pool, four threads, as `make run` starts it).

    It may send to a loopback receiver over http, with a one-second timeout and ten retries a second apart.
    """
    from tests.support import workers

    work = tmp_path_factory.mktemp("webhooks-worker")
    worker = workers.start_worker(
        queues=("webhooks",),
        db=workers.WEBHOOKS_DB,
        work=work,
        env={
            "VIGIA_WEBHOOK_ALLOW_HTTP": "1",
            "VIGIA_WEBHOOK_ALLOW_LOOPBACK": "1",
            "VIGIA_WEBHOOK_TIMEOUT_SECONDS": "1",
            "VIGIA_WEBHOOK_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1,1,1",
            "VIGIA_PRELOAD_TENSORFLOW": "0",
        },
        name="webhooks",
        pool="threads",
        concurrency=4,
    )
    with workers.publishing_to(worker):
        workers.wait_ready(worker, timeout=60)
        yield worker


@pytest.fixture
def hook(local_webhooks, receiver):
    """An endpoint of client "acme" at the test receiver; its secret is `hook.secret`."""
    from tests.support.webhooks import client_endpoint

    endpoint, secret = client_endpoint(receiver.url)
    endpoint.secret = secret
    return endpoint


#: Fixtures that start real processes: a test that uses one is marked `worker` (and needs PostgreSQL) whether or
#: not it says so, so `make test-fast` can never pick it up by mistake.
WORKER_FIXTURES = {"celery_worker_process", "training_worker", "webhooks_worker"}


def pytest_collection_modifyitems(items):
    """Mark tests that use a real worker `worker`, so the quick lane (`-m "not slow and not worker"`) skips them."""
    for item in items:
        if WORKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.worker)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Every test starts with no rate-limit counts (the test settings keep them in this process's memory)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_bank_index():
    """Each test's scoring starts from an empty bank index: the database under it starts empty too."""
    from moderation.services import bank_index

    bank_index._process_index = None
    yield
    bank_index._process_index = None


@pytest.fixture
def bank_desk(media_root, published):
    """Photos scored by the fake scorer at threshold 0.4 with no audit sample (`tests.support.banks`)."""
    from tests.support.banks import set_threshold

    set_threshold()


@pytest.fixture
def boss(db):
    """An admin: staff and in the admins group, as the hash bank pages and services expect."""
    from moderation.permissions import ensure_groups
    from tests.support.factories import make_user

    _moderators, admins = ensure_groups()
    user = make_user("boss", is_staff=True)
    user.groups.add(admins)
    return user
