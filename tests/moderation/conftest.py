"""Fixtures for the moderation tests: a media folder per test, a fake scorer, and a real Celery worker.

The fake scorer stands in for `classifier.scoring.Scorer` in unit tests (same methods, no TensorFlow); delivery
tests start a real worker instead (see `celery_worker_process`).
"""

import io
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
def queued(monkeypatch):
    """Record the scoring tasks published (after commit) instead of sending them to Redis."""
    from moderation.tasks import scoring as scoring_tasks

    published: list[list[int]] = []
    monkeypatch.setattr(scoring_tasks.score_images, "delay", lambda ids: published.append(list(ids)))
    return published


@pytest.fixture
def active_model(db):
    from moderation.models import ModelVersion

    return ModelVersion.objects.create(
        version="v0001", labels=["allowed", "weapon"], prohibited_labels=["weapon"], is_active=True
    )
