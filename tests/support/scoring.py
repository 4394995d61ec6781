"""A stand-in for `classifier.scoring.Scorer` in unit tests: the same methods, no TensorFlow."""

import io
from dataclasses import dataclass

from PIL import Image


def never_audit() -> float:
    """An audit draw that never samples (no audit probability reaches 0.99)."""
    return 0.99


def always_audit() -> float:
    """An audit draw that always samples."""
    return 0.0


@dataclass
class FakePrediction:
    """What `predict` returns, shaped like the real scorer's prediction: a version and one dict per image."""

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
        """Report no change: the fake's version moves only when a test sets it."""
        return False

    @property
    def version(self) -> str | None:
        """The version it pretends to serve; None acts as "no active model"."""
        return self._version

    def probability(self, data: bytes) -> float:
        """Return the image's share of red, its prohibited probability."""
        red, green, blue = Image.open(io.BytesIO(data)).convert("RGB").resize((1, 1)).getpixel((0, 0))
        return round(red / max(1, red + green + blue), 4)

    def predict(self, images):
        """Score a batch like the real scorer; record the batch size and fail on the bytes listed in `fail_on`."""
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
