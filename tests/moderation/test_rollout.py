"""Rollout: activation flips the database and the registry pointer together; workers follow; rollback is one call."""

import shutil
import time

import pytest
from django.core.management import call_command

from moderation.models import ImageStatus, ModelVersion, Score
from moderation.services import model_versions
from tests.support.waiting import wait_until
from tests.support.workers import route_through, serving_reported, train_tiny_version, upload_red


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """A registry with v0001 (red is "bad", active) and v0002 (red is "ok", saved only)."""
    root = tmp_path_factory.mktemp("rollout") / "models"
    cache = root.parent / "cache"
    train_tiny_version(root, cache)
    train_tiny_version(root, cache, inverted=True, activate=False)
    return root


@pytest.fixture
def registry_copy(two_versions, tmp_path, settings):
    root = tmp_path / "models"
    shutil.copytree(two_versions, root)
    settings.VIGIA_MODEL_REGISTRY = root
    return model_versions.get_registry()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_sync_models_mirrors_the_registry_and_the_pointer_wins(registry_copy):
    ModelVersion.objects.create(version="v0002", is_active=True)
    call_command("sync_models")
    rows = {row.version: row for row in ModelVersion.objects.all()}
    assert set(rows) == {"v0001", "v0002"}
    assert rows["v0001"].is_active and not rows["v0002"].is_active
    assert rows["v0001"].prohibited_labels == ["bad"] and rows["v0001"].metrics


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_activation_and_rollback_flip_rows_and_pointer_together_and_rescore_after_commit(registry_copy, rescores):
    model_versions.sync_models()
    model_versions.activate_version(version="v0002")
    assert list(ModelVersion.objects.filter(is_active=True).values_list("version", flat=True)) == ["v0002"]
    assert registry_copy.active_version() == "v0002"
    assert rescores == ["rescore"]
    assert model_versions.previous_version().version == "v0001"

    model_versions.activate_version(version=model_versions.previous_version().version)
    assert ModelVersion.objects.get(is_active=True).version == "v0001"
    assert registry_copy.active_version() == "v0001"
    assert rescores == ["rescore", "rescore"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_a_failed_pointer_write_rolls_the_rows_back(registry_copy, rescores, monkeypatch):
    model_versions.sync_models()

    def refuse(version):
        raise OSError("disk full")

    monkeypatch.setattr(type(registry_copy), "activate", lambda self, version: refuse(version))
    with pytest.raises(OSError):
        model_versions.activate_version(version="v0002")
    assert ModelVersion.objects.get(is_active=True).version == "v0001"
    assert rescores == []


# ------------------------------------------------------------------------------------------------- real worker


def worker_registry_with_two_versions(worker, settings, tmp_path):
    """The worker's registry, with the inverted v0002 beside its model so that tests can switch between them."""
    settings.VIGIA_MODEL_REGISTRY = worker.work / "models"
    registry = model_versions.get_registry()
    if "v0002" not in {info.version for info in registry.versions()}:
        train_tiny_version(settings.VIGIA_MODEL_REGISTRY, tmp_path / "cache", inverted=True, activate=False)
    return registry


@pytest.mark.worker
@pytest.mark.timeout(360)
@pytest.mark.django_db(transaction=True)
def test_promotion_and_rollback_reach_a_running_worker_and_open_images_are_rescored(
    celery_worker_process, settings, tmp_path
):
    worker = celery_worker_process
    route_through(worker, settings)
    settings.VIGIA_FEATURE_CACHE = tmp_path / "cache"
    registry = worker_registry_with_two_versions(worker, settings, tmp_path)
    active_before = registry.active_version()
    model_versions.sync_models()

    first = upload_red("rollout-1")
    # The first score waits for the child to load TensorFlow and the model, which a loaded machine makes slow.
    wait_until(lambda: Score.objects.filter(image=first).exists(), timeout=150, what="the first score", worker=worker)
    first.refresh_from_db()
    assert (first.model_version, first.status) == (active_before, ImageStatus.FLAGGED)

    # Promotion: the worker switches by itself, and the flagged image is re-scored by the new model.
    model_versions.activate_version(version="v0002")
    seconds = wait_until(
        lambda: Score.objects.filter(image=first, model_version="v0002").exists(),
        timeout=60,
        what="re-scoring",
        worker=worker,
    )
    first.refresh_from_db()
    assert (first.model_version, first.status) == ("v0002", ImageStatus.CLEARED)
    assert seconds < 60
    second = upload_red("rollout-2")
    wait_until(
        lambda: Score.objects.filter(image=second).exists(),
        timeout=60,
        what="a score by the promoted model",
        worker=worker,
    )
    assert Score.objects.get(image=second).model_version == "v0002"

    # Rollback: one call, and new images are scored by the earlier version again.
    model_versions.activate_version(version=active_before)
    third = upload_red("rollout-3")
    wait_until(
        lambda: Score.objects.filter(image=third).exists(), timeout=60, what="a score after the rollback", worker=worker
    )
    third.refresh_from_db()
    assert (third.model_version, third.status) == (active_before, ImageStatus.FLAGGED)
    assert registry.active_version() == active_before


def received_tasks(worker) -> int:
    """How many tasks the worker has taken off the queue so far (Celery logs one line each at INFO)."""
    return worker.log.read_text(errors="replace").count("] received")


@pytest.mark.worker
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_promotion_and_rollback_reach_idle_worker_processes_and_each_reports_what_it_serves(
    celery_worker_process, settings, tmp_path
):
    from moderation.selectors.serving import serving_workers

    worker = celery_worker_process
    registry = worker_registry_with_two_versions(worker, settings, tmp_path)
    model_versions.sync_models()
    before = registry.active_version()
    promoted = "v0002" if before != "v0002" else "v0001"
    wait_until(
        lambda: serving_reported(worker, before),
        timeout=60,
        what=f"the worker's children to report {before}",
        worker=worker,
    )
    tasks = received_tasks(worker)

    # No upload and no re-scoring: nothing but the watcher can make the idle children switch.
    activated_at = time.time()
    model_versions.activate_version(version=promoted, rescore=False)
    wait_until(
        lambda: serving_reported(worker, promoted), timeout=60, what=f"every child to report {promoted}", worker=worker
    )
    entries = serving_workers(client=worker.broker)
    switched = [entry for entry in entries if entry.version == promoted]
    assert switched and all(entry.since.timestamp() >= activated_at - 1 for entry in switched)
    assert all(entry.load_seconds is not None and entry.failed == {} for entry in switched)
    # TensorFlow never runs in the parent that forks the children, so the parent never reports a model.
    assert worker.pid not in {entry.pid for entry in entries}

    # Rollback: what the page's one-click button activates.
    assert model_versions.previous_version().version == before
    model_versions.activate_version(version=before, rescore=False)
    wait_until(
        lambda: serving_reported(worker, before),
        timeout=60,
        what=f"every child to report {before} again",
        worker=worker,
    )
    assert received_tasks(worker) == tasks, "a task reached the worker; the switch must not have needed one"
    assert registry.active_version() == before
