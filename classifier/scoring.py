"""Score images with the active model version, reloading safely when the active pointer changes.

A Celery child creates one Scorer and calls `predict` for each batch. Checking for a new version costs one
`stat` of the pointer file, so it happens on every call; a new version only replaces the serving one after it
loads (sha256, safe_mode) and passes a smoke prediction, otherwise the old model keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.registry import LoadedModel, Registry

logger = logging.getLogger(__name__)


class NoActiveModel(RuntimeError):
    """There is no active model version that loads (none activated yet, or only broken ones)."""


@dataclass(frozen=True)
class Prediction:
    model_version: str
    probabilities: list[dict[str, float]]


def compiled_forward(model, image_size: int):
    """The model's inference pass as one traced function for any batch size (no per-call Keras overhead)."""
    import tensorflow as tf

    return tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32)],
    )


def smoke_test(loaded: LoadedModel, forward) -> None:
    """Raise unless one blank image yields a finite probability vector over the labels."""
    blank = np.full((1, loaded.image_size, loaded.image_size, 3), 255.0, dtype=np.float32)
    output = np.asarray(forward(blank))
    if output.shape != (1, len(loaded.labels)):
        raise ValueError(f"smoke prediction has shape {output.shape}, expected (1, {len(loaded.labels)})")
    if not np.all(np.isfinite(output)) or abs(float(output.sum()) - 1.0) > 1e-3:
        raise ValueError("smoke prediction is not a probability distribution")


class Scorer:
    """The active model of a registry, loaded lazily once per process."""

    def __init__(self, registry_root: str | Path):
        self.registry = Registry(registry_root)
        self._loaded: LoadedModel | None = None
        self._forward = None
        self._pointer_state: tuple | None = None
        self._failed: dict[str, str] = {}
        self._lock = threading.RLock()

    def _stat_pointer(self) -> tuple | None:
        try:
            stat = os.stat(self.registry.active_file)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def refresh(self) -> bool:
        """Reload if the active pointer names another version; True when a new model now serves.

        An unchanged pointer costs one stat. A version that fails to load or to predict is remembered and not
        retried until the pointer is written again, so a broken release does not cost a reload per request.
        """
        state = self._stat_pointer()
        if state == self._pointer_state:
            return False
        with self._lock:
            if state == self._pointer_state:
                return False
            self._pointer_state = state
            self._failed.clear()
            version = self.registry.active_version() if state is not None else None
            if version is None or (self._loaded is not None and self._loaded.version == version):
                return False
            return self._try_load(version)

    def _try_load(self, version: str) -> bool:
        from classifier.runtime import configure_threads

        configure_threads()
        try:
            candidate = self.registry.load(version)
            forward = compiled_forward(candidate.model, candidate.image_size)
            smoke_test(candidate, forward)
        except Exception as error:
            self._failed[version] = str(error)
            kept = self._loaded.version if self._loaded else "none"
            logger.warning("model %s not activated in this process (%s); still serving %s", version, error, kept)
            return False
        self._loaded, self._forward = candidate, forward
        logger.info("serving model %s", version)
        return True

    def _current(self) -> LoadedModel:
        self.refresh()
        loaded = self._loaded
        if loaded is None:
            reasons = "; ".join(f"{v}: {why}" for v, why in self._failed.items())
            raise NoActiveModel(
                f"no usable active model in {self.registry.root}" + (f" ({reasons})" if reasons else "")
            )
        return loaded

    @property
    def version(self) -> str:
        return self._current().version

    @property
    def labels(self) -> list[str]:
        return list(self._current().labels)

    @property
    def prohibited(self) -> list[str]:
        return list(self._current().prohibited)

    def predict(self, images: Sequence[bytes | str | Path | np.ndarray]) -> Prediction:
        """Per image, {label: probability}, from one forward pass over the whole batch.

        Raises `classifier.images.ImageDecodeError` naming the first image that cannot be decoded.
        """
        from classifier.images import ImageDecodeError, decode_image

        with self._lock:
            loaded = self._current()
            forward = self._forward
        if not images:
            return Prediction(model_version=loaded.version, probabilities=[])
        batch = np.empty((len(images), loaded.image_size, loaded.image_size, 3), dtype=np.float32)
        for i, image in enumerate(images):
            try:
                batch[i] = decode_image(image, loaded.image_size)
            except ImageDecodeError as error:
                raise ImageDecodeError(f"image {i}: {error}") from error
        output = np.asarray(forward(batch), dtype=np.float64)
        labels = loaded.labels
        return Prediction(
            model_version=loaded.version,
            probabilities=[{label: float(p) for label, p in zip(labels, row, strict=True)} for row in output],
        )
