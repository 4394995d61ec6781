"""Which runtime the desk uses: what a worker's parent preloads, and what a version's page says serves it."""

import pytest
from django.test import Client
from django.urls import reverse

from moderation import worker
from moderation.services import model_versions
from tests.support.factories import make_user
from tests.support.workers import train_tiny_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loop_settings")]


@pytest.fixture
def version(settings, tmp_path) -> str:
    """A tiny version with its LiteRT files, active, mirrored into the database."""
    name = train_tiny_version(settings.VIGIA_MODEL_REGISTRY, tmp_path / "cache")
    model_versions.sync_models()
    return name


def page(version: str) -> str:
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.filter(username="boss").first() or make_user(
        "boss", is_superuser=True, is_staff=True
    )
    client = Client()
    client.force_login(admin)
    response = client.get(reverse("model-version-detail", args=[version]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_scoring_parent_preloads_litert_only_while_the_active_version_serves_with_it(version, settings):
    registry = model_versions.get_registry()
    assert worker.preload_plan(queues={"scoring", "default"}) == "litert"
    assert worker.preload_plan(queues={"training"}) == "tensorflow"
    assert worker.preload_plan(queues={"webhooks"}) is None
    settings.VIGIA_RUNTIME = "keras"
    assert worker.preload_plan(queues={"scoring", "default"}) == "tensorflow"
    settings.VIGIA_RUNTIME = "litert"
    (registry.path(version) / "model.tflite").write_bytes(b"not the checked file")
    assert worker.preload_plan(queues={"scoring", "default"}) == "tensorflow"


def test_the_version_page_says_which_runtime_serves_and_why(version, settings):
    assert "LiteRT (largest probability difference from Keras" in page(version)
    path = model_versions.get_registry().path(version)
    (path / "model.tflite").write_bytes(b"tampered")
    assert "Keras. The LiteRT file is refused" in page(version) and "sha256" in page(version)
    for name in ("model.tflite", "model.tflite.sha256"):
        (path / name).unlink()
    assert "Keras. No LiteRT file" in page(version)
    settings.VIGIA_RUNTIME = "keras"
    assert "VIGIA_RUNTIME=keras" in page(version)
