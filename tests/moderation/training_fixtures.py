"""Builders for the learning-loop tests: synthetic labelled images, listings, decisions and a tiny-model setup.

Two labels that a randomly initialised `tiny` backbone separates easily: "bad" images are mostly red, "ok" images
mostly blue, each with its own noise so every file has a distinct hash.
"""

import io
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from PIL import Image

from moderation.models import Decision, DecisionOutcome, ImageStatus, Listing, ListingImage, ModelVersion

PROHIBITED = "bad"
ALLOWED = "ok"
COLORS = {PROHIBITED: (210, 40, 40), ALLOWED: (40, 60, 210)}
_counter = iter(range(10**9))


def synthetic_png(label: str, seed: int | None = None, size: int = 32) -> bytes:
    seed = next(_counter) if seed is None else seed
    rng = np.random.default_rng(seed)
    base = np.array(COLORS[label], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
    output = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(output, format="PNG")
    return output.getvalue()


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Trouser is "bad", Bag is "ok": real photos with many ways to vary, so a model trained on shuffled labels has no
# single dominant axis to fall on by luck (solid-colour images would let it split on colour half the time).
FASHION_CLASSES = {PROHIBITED: 1, ALLOWED: 8}
_fashion: dict[str, np.ndarray] = {}


def fashion_png(label: str, index: int) -> bytes:
    """The index-th Fashion-MNIST test photo of the label's class, as PNG."""
    import gzip

    if not _fashion:
        if not FASHION_MNIST.is_dir():
            pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
        with gzip.open(FASHION_MNIST / "t10k-images-idx3-ubyte.gz") as handle:
            _fashion["x"] = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz") as handle:
            _fashion["y"] = np.frombuffer(handle.read(), np.uint8, offset=8)
    rows = np.where(_fashion["y"] == FASHION_CLASSES[label])[0]
    output = io.BytesIO()
    Image.fromarray(_fashion["x"][rows[index]]).save(output, format="PNG")
    return output.getvalue()


def write_training_folder(root: Path, per_label: int = 12, fashion: bool = False) -> Path:
    for label in (PROHIBITED, ALLOWED):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_label):
            data = fashion_png(label, index) if fashion else synthetic_png(label)
            (root / label / f"{index}.png").write_bytes(data)
    return root


def make_user(name: str, **extra):
    return get_user_model().objects.create_user(username=name, password="pw-for-tests-only", **extra)


def make_image(label: str = PROHIBITED, status: str = ImageStatus.FLAGGED, listing: Listing | None = None):
    """A scored listing image stored under MEDIA_ROOT, as intake leaves it."""
    import hashlib

    data = synthetic_png(label)
    listing = listing or Listing.objects.create(external_id=f"ext-{next(_counter)}", title="a listing")
    image = ListingImage(
        listing=listing,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        width=32,
        height=32,
        image_format="PNG",
        status=status,
        prohibited_probability=0.8,
        prohibited_label=PROHIBITED,
        model_version="v0001",
    )
    image.file.save(f"{image.sha256[:16]}.png", ContentFile(data), save=False)
    image.save()
    return image


def make_decision(image: ListingImage, moderator, outcome: str, label: str | None = "") -> Decision:
    if label is None:
        label = PROHIBITED if outcome == DecisionOutcome.CONFIRM else ALLOWED
    return Decision.objects.create(
        image=image,
        moderator=moderator,
        outcome=outcome,
        label=label,
        model_version=image.model_version,
        prohibited_probability=image.prohibited_probability,
    )


def mirror_active_labels() -> ModelVersion:
    """An active ModelVersion row naming the labels, for code that only needs the label set."""
    return ModelVersion.objects.create(
        version="v0001", labels=[ALLOWED, PROHIBITED], prohibited_labels=[PROHIBITED], is_active=True
    )


@pytest.fixture(name="loop_settings")
def loop_settings_fixture(settings, tmp_path):
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


def import_initial_set(root: Path, per_label: int = 12, fashion: bool = False) -> None:
    """The initial training set, imported as `make run` does, with "bad" marked prohibited."""
    from django.core.management import call_command

    folder = write_training_folder(root / "initial-set", per_label=per_label, fashion=fashion)
    call_command("import_training_set", str(folder), "--prohibited", PROHIBITED)


def add_holdout(per_label: int, fashion: bool = False, seed: int = 1000) -> None:
    """Human-labelled holdout examples, as decisions whose hash put them in the holdout produce them."""
    import hashlib

    from django.conf import settings

    from moderation.models import ExampleSource, TrainingExample

    folder = Path(settings.MEDIA_ROOT) / "holdout"
    folder.mkdir(parents=True, exist_ok=True)
    for label in (PROHIBITED, ALLOWED):
        for index in range(per_label):
            if fashion:
                data = fashion_png(label, 500 + index)
            else:
                data = synthetic_png(label, seed=seed + index + (0 if label == PROHIBITED else 50_000))
            sha = hashlib.sha256(data).hexdigest()
            (folder / f"{sha}.png").write_bytes(data)
            TrainingExample.objects.create(
                sha256=sha,
                path=f"holdout/{sha}.png",
                label=label,
                source=ExampleSource.DECISION,
                is_holdout=True,
            )


def shuffle_training_labels(seed: int = 7) -> None:
    """Relabel the trainable examples so labels carry no information about the images.

    Within each true label, exactly half become "bad" and half "ok" (in random order): a plain coin flip per
    example can correlate with the colours by chance on a small set and then teach the real rule.
    """
    from moderation.selectors.training import trainable_examples

    rng = np.random.default_rng(seed)
    for label in (PROHIBITED, ALLOWED):
        rows = list(trainable_examples().filter(label=label).order_by("id"))
        new_labels = [PROHIBITED, ALLOWED] * (len(rows) // 2) + [PROHIBITED] * (len(rows) % 2)
        rng.shuffle(new_labels)
        for row, new_label in zip(rows, new_labels, strict=True):
            row.label = new_label
            row.save(update_fields=["label"])


@pytest.fixture(name="rescores")
def rescores_fixture(monkeypatch):
    """Calls of the post-promotion re-scoring (recorded instead of queued)."""
    from moderation.services import model_versions

    calls: list[str] = []
    monkeypatch.setattr(model_versions, "_rescore_open_images", lambda: calls.append("rescore"))
    return calls


TRAINING_WORKER_REDIS_URL = "redis://127.0.0.1:6379/10"


@pytest.fixture(scope="module", name="training_worker")
def training_worker_fixture(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker on the `training` queue (prefork, one child) against the test database.

    Training is made slow on purpose (many epochs of the tiny backbone) so a test can kill the child mid-run.
    """
    import os
    import subprocess
    import sys
    import time
    import uuid

    import redis
    from django.db import connection

    from tests.moderation.conftest import _point_celery_at, stop_worker

    if connection.vendor != "postgresql":
        pytest.skip("worker tests need PostgreSQL (DATABASE_URL) shared with a worker process")
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    broker = redis.Redis.from_url(TRAINING_WORKER_REDIS_URL)
    broker.flushdb()
    work = tmp_path_factory.mktemp("training-worker")
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "moderation.test_settings",
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": TRAINING_WORKER_REDIS_URL,
        "MEDIA_ROOT": str(work / "media"),
        "VIGIA_MODEL_REGISTRY": str(work / "models"),
        "VIGIA_FEATURE_CACHE": str(work / "feature-cache"),
        "VIGIA_BACKBONE": "tiny",
        "VIGIA_TRAINING_HPARAMS": '{"image_size": 32, "epochs": 100000, "early_stopping_patience": 100000}',
        "VIGIA_TRAINING_HEARTBEAT_SECONDS": "0.5",
        "PYTHONPATH": str(repo),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log_path = work / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - kept open for the worker's lifetime
    celery = Path(sys.executable).with_name("celery")
    process = subprocess.Popen(
        [str(celery), "-A", "moderation", "worker", "-Q", "training", "-c", "1", "--pool", "prefork"]
        + ["-n", f"training-{uuid.uuid4().hex[:8]}@%h", "-l", "info"]
        + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    previous = _point_celery_at(TRAINING_WORKER_REDIS_URL)
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"training worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield {"process": process, "work": work, "log": log_path, "media": work / "media", "models": work / "models"}
    finally:
        _point_celery_at(previous)
        stop_worker(process)
        log.close()
        broker.flushdb()
