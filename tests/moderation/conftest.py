"""Fixtures for the moderation tests: a media folder per test, a fake scorer, and a real Celery worker.

The fake scorer stands in for `classifier.scoring.Scorer` in unit tests (same methods, no TensorFlow); delivery
tests start a real worker instead (see `celery_worker_process`).
"""

import io
import os
import subprocess
from dataclasses import dataclass

import pytest
from PIL import Image


@dataclass
class FakePrediction:
    model_version: str
    probabilities: list[dict[str, float]]


class FakeScorer:
    """Scores an image by its colour: the share of red decides the probability of the prohibited label."""

    def __init__(self, version: str | None = "v0001", labels=("allowed", "weapon"), prohibited=("weapon",)):
        self._version = version
        self.labels = list(labels)
        self.prohibited = list(prohibited)
        self.calls: list[int] = []
        self.fail_on = set()
        self.on_predict = None

    def refresh(self) -> bool:
        return False

    @property
    def version(self) -> str | None:
        return self._version

    def probability(self, data: bytes) -> float:
        red, green, blue = Image.open(io.BytesIO(data)).convert("RGB").resize((1, 1)).getpixel((0, 0))
        return round(red / max(1, red + green + blue), 4)

    def predict(self, images):
        self.calls.append(len(images))
        if self.on_predict:
            self.on_predict(images)
        out = []
        for data in images:
            if data in self.fail_on:
                raise ValueError("cannot decode this one")
            p = self.probability(data)
            probs = {label: 0.0 for label in self.labels}
            probs[self.prohibited[0]] = p
            probs[self.labels[0]] = round(1 - p, 4)
            out.append(probs)
        return FakePrediction(self._version, out)


@pytest.fixture
def fake_scorer():
    return FakeScorer()


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def active_model(db):
    from moderation.models import ModelVersion

    return ModelVersion.objects.create(
        version="v0001", labels=["allowed", "weapon"], prohibited_labels=["weapon"], is_active=True
    )


# ---------------------------------------------------------------------------------------------------- real worker

WORKER_REDIS_URL = "redis://127.0.0.1:6379/9"
PROHIBITED_COLOR = (210, 40, 40)
ALLOWED_COLOR = (40, 60, 210)


def train_tiny_registry(root, cache) -> str:
    """Make `root` a registry with one active version: the `tiny` backbone trained on red ("bad") vs blue ("ok")."""
    import hashlib

    from classifier.data import Example
    from classifier.hparams import HParams
    from classifier.registry import Registry
    from classifier.training import train_model
    from tests.moderation.images import noisy_png

    examples = []
    for label, color, offset in (("bad", PROHIBITED_COLOR, 0), ("ok", ALLOWED_COLOR, 10_000)):
        for index in range(16):
            data = noisy_png(color, seed=offset + index)
            examples.append(Example(sha256=hashlib.sha256(data).hexdigest(), label=label, data=data))
    hparams = HParams(
        backbone="tiny",
        image_size=32,
        epochs=15,
        early_stopping_patience=15,
        batch_size=16,
        learning_rate=0.1,
        test_share=0.2,
        validation_share=0.1,
    )
    result = train_model(examples, ["ok", "bad"], ["bad"], hparams, cache_dir=cache)
    registry = Registry(root)
    version = registry.save(result)
    registry.activate(version)
    return version


def stop_worker(process: subprocess.Popen) -> None:
    """Stop a test worker's process group for good.

    Cold shutdown (SIGQUIT): nothing is left to finish, and a held fault must not be waited for; SIGKILL if
    it does not go within a few seconds.
    """
    if process.poll() is not None:
        return
    os.killpg(process.pid, 3)
    try:
        process.wait(timeout=8)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def _point_celery_at(url: str) -> str:
    """Make this process publish to `url`; returns the previous broker URL."""
    from kombu import pools

    from moderation.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = url
    # kombu keeps connection and producer pools in process-wide registries keyed by broker; closing a pool
    # without clearing the registry would hand the closed pool back on the next switch, so reset both.
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
    return previous


def clean_broker(client) -> None:
    """Empty the queues but keep kombu's exchange bindings, which the worker declared when it started."""
    for key in client.scan_iter():
        if not key.startswith(b"_kombu.binding."):
            client.delete(key)


@pytest.fixture(scope="module")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real `celery worker` (prefork, one child) on the scoring and default queues, against the test database.

    The worker is a separate program, not a fork of pytest: it reads the test database's name and the temporary
    media folder and registry from its environment, and its own Redis database (9) is emptied first.
    """
    import os
    import subprocess
    import sys
    import time
    import uuid
    from pathlib import Path

    import redis
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("delivery tests need PostgreSQL (DATABASE_URL) shared with a worker process")
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    if db.get("PASSWORD"):
        database_url = database_url.replace("@", f":{db['PASSWORD']}@", 1)

    broker = redis.Redis.from_url(WORKER_REDIS_URL)
    broker.flushdb()
    work = tmp_path_factory.mktemp("worker")
    media = work / "media"
    media.mkdir()
    registry_root = work / "models"
    faults = work / "faults.json"
    faults.write_text("{}")
    name = f"delivery-{uuid.uuid4().hex[:8]}@%h"
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "moderation.test_settings",
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": WORKER_REDIS_URL,
        "VIGIA_MODEL_REGISTRY": str(registry_root),
        "MEDIA_ROOT": str(media),
        "VIGIA_TEST_FAULTS": str(faults),
        "VIGIA_PENDING_SWEEP_SECONDS": "1",
        "PYTHONPATH": str(repo),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log_path = work / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - kept open for the worker's lifetime
    celery = Path(sys.executable).with_name("celery")
    process = subprocess.Popen(
        [str(celery), "-A", "moderation", "worker", "-Q", "scoring,default", "-c", "1", "--pool", "prefork"]
        + ["--include", "tests.moderation.worker_faults", "-n", name, "-l", "info"]
        + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    previous = _point_celery_at(WORKER_REDIS_URL)
    try:
        # Trained while the worker boots; no task reaches it before the model is active.
        version = train_tiny_registry(registry_root, work / "backbone-cache")
        deadline = time.monotonic() + 40
        while b" ready." not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield {
            "process": process,
            "name": name.replace("%h", __import__("socket").gethostname()),
            "media": media,
            "faults": faults,
            "work": work,
            "broker": broker,
            "log": log_path,
            "version": version,
        }
    finally:
        _point_celery_at(previous)
        stop_worker(process)
        log.close()
        broker.flushdb()
