"""Real Celery workers for delivery, redelivery and rollout tests, started as separate programs.

They run against the test database and their own Redis database, are waited for until ready, and are stopped with
everything they forked.

Every Redis URL is derived from the one `make test` provides (`REDIS_URL`, possibly an embedded server on another
port), each worker kind on its own database number so their queues never mix.
"""

import contextlib
import hashlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from moderation.devstack.processes import LoggedProcess, ProcessSpec, start_logged
from tests.support.images import ALLOWED, ALLOWED_COLOR, PROHIBITED, PROHIBITED_COLOR, noisy_png

REPO = Path(__file__).resolve().parents[2]

#: Redis database numbers of the test suite, on the server `REDIS_URL` names.
DELIVERY_DB = 9
TRAINING_DB = 10
SERVING_DB = 11
WEBHOOKS_DB = 12
#: A database no worker ever listens on.
SILENT_DB = 14


def redis_url(db: int) -> str:
    """`REDIS_URL` (what `make test` provides) with its database number replaced by `db`."""
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return urlunsplit(parts._replace(path=f"/{db}"))


def database_url() -> str:
    """The test database as a URL a worker process can use (PostgreSQL only: SQLite cannot be shared)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("worker tests need PostgreSQL (DATABASE_URL) shared with a worker process")
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def point_celery_at(url: str) -> str:
    """Make this process publish to `url` (and read call results there); returns the previous broker URL."""
    from kombu import pools

    from moderation.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = url
    # Calls (`outbox.call`) read their answers from the same Redis database the worker writes them to.
    app.conf.result_backend = url
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
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


@dataclass
class Worker:
    """A running test worker: its process and log, its files, and a client of its Redis database."""

    process: LoggedProcess
    node: str
    broker_url: str
    broker: object
    work: Path
    media: Path
    models: Path
    extra: dict = field(default_factory=dict)

    @property
    def log(self) -> Path:
        """The worker's log file, to wait for a line or show on failure."""
        return self.process.log_path

    @property
    def pid(self) -> int:
        """The pid of the worker's main process, the leader of its process group."""
        return self.process.pid

    def stop(self) -> None:
        """Cold shutdown (SIGQUIT to the group): nothing is left to finish, and a held fault is not waited for."""
        self.process.stop(grace=8, signum=signal.SIGQUIT, group=True)


def start_worker(
    *,
    queues: Sequence[str],
    db: int,
    work: Path,
    broker_url: str | None = None,
    env: dict[str, str] | None = None,
    include: Sequence[str] = (),
    name: str = "worker",
    pool: str = "prefork",
    concurrency: int = 1,
) -> Worker:
    """Start `celery worker` (prefork, one child, unless `pool` and `concurrency` say otherwise) on `queues` against
    the test database and Redis database `db`.

    The worker reads the test database, its media folder (`work/media`) and model registry (`work/models`) from
    its environment; `env` adds to that. Its Redis database is emptied first. `broker_url` points it at another
    Redis server than the suite's (a test that stops and restarts its own). Call `wait_ready()` on the result
    (`wait_ready(worker)`) before sending it work; stop it with `worker.stop()`.
    """
    import redis

    url = broker_url or redis_url(db)
    broker = redis.Redis.from_url(url)
    broker.flushdb()
    media, models = work / "media", work / "models"
    media.mkdir(parents=True, exist_ok=True)
    node = f"{name}-{uuid.uuid4().hex[:8]}@%h"
    base_env = {
        "DJANGO_SETTINGS_MODULE": "moderation.test_settings",
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": url,
        "MEDIA_ROOT": str(media),
        "VIGIA_MODEL_REGISTRY": str(models),
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    argv = [str(Path(sys.executable).with_name("celery")), "-A", "moderation", "worker", "-Q", ",".join(queues)]
    argv += ["-c", str(concurrency), "--pool", pool, "-n", node, "-l", "info"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    for module in include:
        argv += ["--include", module]
    process = start_logged(ProcessSpec(name, argv, {**base_env, **(env or {})}, REPO), work / f"{name}.log")
    return Worker(
        process=process,
        node=node.replace("%h", socket.gethostname()),
        broker_url=url,
        broker=broker,
        work=work,
        media=media,
        models=models,
    )


def redis_errors() -> type[Exception]:
    """redis-py's base error, imported late (redis is a test dependency of workers only)."""
    import redis

    return redis.RedisError


@contextlib.contextmanager
def publishing_to(worker: Worker):
    """Make this process publish to the worker's Redis database while the block runs; then stop the worker."""
    previous = point_celery_at(worker.broker_url)
    try:
        yield worker
    finally:
        point_celery_at(previous)
        worker.stop()
        # A test that stopped its own Redis must still report its own failure, not this one's.
        with contextlib.suppress(OSError, ConnectionError, TimeoutError, redis_errors()):
            worker.broker.flushdb()


def wait_ready(worker: Worker, timeout: float = 60) -> None:
    """Wait for the worker's " ready." line; stop it and fail the test with its log if it does not come."""
    try:
        worker.process.wait_for_line(" ready.", timeout)
    except (TimeoutError, RuntimeError) as error:
        worker.stop()
        pytest.fail(f"the {worker.process.name} did not start: {error}")


def tiny_examples(labels_by_color: dict[str, tuple[int, int, int]], seed: int, per_label: int = 16) -> list:
    """Classifier examples of noisy one-colour photos, `per_label` per label, seeded from `seed`."""
    from classifier.data import Example

    examples = []
    for offset, (label, color) in enumerate(labels_by_color.items()):
        for index in range(per_label):
            data = noisy_png(color, seed=seed + offset * 10_000 + index)
            examples.append(Example(sha256=hashlib.sha256(data).hexdigest(), label=label, data=data))
    return examples


TINY_HPARAMS = {
    "backbone": "tiny",
    "image_size": 32,
    "epochs": 15,
    "early_stopping_patience": 15,
    "batch_size": 16,
    "learning_rate": 0.1,
}


def train_tiny_version(root: Path, cache: Path, *, inverted: bool = False, activate: bool = True) -> str:
    """Save a `tiny`-backbone version into the registry at `root`: red is "bad", blue "ok" (or the other way).

    The inverted version's scores are telling in rollout tests: a red photo it scores is cleared, not flagged.
    """
    from classifier.hparams import HParams
    from classifier.registry import Registry
    from classifier.training import train_model

    colors = (
        {ALLOWED: PROHIBITED_COLOR, PROHIBITED: ALLOWED_COLOR}
        if inverted
        else {PROHIBITED: PROHIBITED_COLOR, ALLOWED: ALLOWED_COLOR}
    )
    examples = tiny_examples(colors, seed=20_000 if inverted else 0)
    extra = {} if inverted else {"test_share": 0.2, "validation_share": 0.1}
    result = train_model(
        examples, [ALLOWED, PROHIBITED], [PROHIBITED], HParams(**TINY_HPARAMS, **extra), cache_dir=cache
    )
    registry = Registry(root)
    version = registry.save(result)
    if activate:
        registry.activate(version)
    return version


def route_through(worker: Worker, settings) -> None:
    """Point this test at the scoring worker's media and registry, empty its queues, route by score alone at 0.5."""
    from moderation.models import ModerationSettings

    clean_broker(worker.broker)
    settings.MEDIA_ROOT = worker.media
    settings.VIGIA_MODEL_REGISTRY = worker.models
    ModerationSettings.objects.update_or_create(pk=1, defaults={"audit_rate": 0.0, "default_threshold": 0.5})


_seed = iter(range(70_000, 10**9))


def upload_red(external_id: str):
    """Store a listing with one red (prohibited-coloured) photo, as the API would; returns its image."""
    from tests.support import images
    from tests.support.factories import store_listing

    data = images.noisy_png(PROHIBITED_COLOR, seed=next(_seed))
    listing = store_listing(
        external_id=external_id, title="a listing", description="", files=[images.upload(data, name="p.png")]
    )
    return listing.images.get()


def serving_reported(worker: Worker, version: str, runtime: str | None = None) -> bool:
    """Whether every scoring child of the worker reports `version` (with `runtime`, if given), none missing."""
    import psutil

    from moderation.selectors.serving import serving_workers

    children = {child.pid for child in psutil.Process(worker.pid).children()}
    entries = {entry.pid: entry for entry in serving_workers(client=worker.broker)}
    return bool(children) and all(
        pid in entries and entries[pid].version == version and runtime in (None, entries[pid].runtime)
        for pid in children
    )
