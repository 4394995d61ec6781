"""A real scoring worker serving LiteRT: no TensorFlow in its child, and a hot switch to a Keras-only version and back.

A module of its own, so its worker's child has never served Keras (which would import TensorFlow) when the first
assertion runs.
"""

import json

import pytest

from moderation.models import ImageStatus, Score
from moderation.services import model_versions
from tests.support.waiting import wait_until
from tests.support.workers import route_through, serving_reported, train_tiny_version, upload_red


def keras_only(registry, version: str) -> None:
    """Take `version`'s LiteRT files away, as for a version whose conversion failed its check."""
    for name in ("model.tflite", "model.tflite.sha256", "features.tflite", "features.tflite.sha256"):
        (registry.path(version) / name).unlink()


def scored_by(image, version: str, worker) -> None:
    wait_until(
        lambda: Score.objects.filter(image=image, model_version=version).exists(),
        timeout=60,
        what=f"a score by {version}",
        worker=worker,
    )
    image.refresh_from_db()


@pytest.mark.worker
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_a_litert_child_has_no_tensorflow_and_switches_to_a_keras_only_version_and_back(
    celery_worker_process, settings, tmp_path
):
    worker = celery_worker_process
    route_through(worker, settings)
    registry = model_versions.get_registry()
    litert_version = registry.active_version()
    keras_version = train_tiny_version(worker.models, tmp_path / "cache", inverted=True, activate=False)
    keras_only(registry, keras_version)
    model_versions.sync_models()
    modules = tmp_path / "modules.jsonl"
    worker.extra["faults"].write_text(json.dumps({"modules": str(modules)}))

    first = upload_red("litert-1")
    scored_by(first, litert_version, worker)
    [report] = [json.loads(line) for line in modules.read_text().splitlines()]
    assert (report["version"], report["runtime"], report["tensorflow"]) == (litert_version, "litert", False)
    assert report["rss_mb"] < 350
    assert first.status == ImageStatus.FLAGGED
    wait_until(lambda: serving_reported(worker, litert_version, "litert"), timeout=30, what="a LiteRT report")

    # Hot switch to the Keras-only version: the watcher loads it (TensorFlow now), smoke-tests it and swaps.
    model_versions.activate_version(version=keras_version, rescore=False)
    wait_until(
        lambda: serving_reported(worker, keras_version, "keras"), timeout=60, what="the Keras version", worker=worker
    )
    second = upload_red("litert-2")
    scored_by(second, keras_version, worker)
    assert second.status == ImageStatus.CLEARED  # the inverted model: red is allowed

    # And back: LiteRT serves again, from the same child.
    model_versions.activate_version(version=litert_version, rescore=False)
    wait_until(
        lambda: serving_reported(worker, litert_version, "litert"), timeout=60, what="LiteRT again", worker=worker
    )
    third = upload_red("litert-3")
    scored_by(third, litert_version, worker)
    assert third.status == ImageStatus.FLAGGED
    reports = [json.loads(line) for line in modules.read_text().splitlines()]
    assert [r["runtime"] for r in reports] == ["litert", "keras", "litert"]
    assert len({r["pid"] for r in reports}) == 1
