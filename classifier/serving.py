"""Which runtime serves a version: its checked LiteRT file when it has one, else the Keras model.

A version saved with a LiteRT file that passed its equivalence check (`classifier.conversion`) is served by the
LiteRT interpreter, and the process never imports TensorFlow for it. Anything short of that serves with Keras,
exactly as before LiteRT files existed, and says why in the served model's ``note``: the version predates LiteRT
files or failed its check (no file), the file's bytes no longer match their recorded sha256 (refused), or the
interpreter is not installed. ``runtime="keras"`` skips LiteRT altogether.

The same choice gives training its feature extractor: the active version's LiteRT backbone embeds new images for
the bottleneck cache when the next retrain asks for the features it computes (`load_feature_extractor`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from classifier.model import shape_problem
from classifier.registry import Registry, RegistryError

logger = logging.getLogger(__name__)

#: Accepted values of the runtime preference: LiteRT when the version has a checked file, or always Keras.
RUNTIMES = ("litert", "keras")


@dataclass(frozen=True)
class ServedModel:
    """A version ready to score: its forward pass (pixels in, probabilities out) and what it was loaded with."""

    version: str
    labels: list[str]
    prohibited: list[str]
    image_size: int
    forward: Callable[[np.ndarray], np.ndarray]
    runtime: str
    # Why a version that could have served with LiteRT serves with Keras (None when nothing was amiss).
    note: str | None = None


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


def _litert_model(registry: Registry, version: str, part: str, threads: int | None):
    """``(LiteRTModel or None, why not)`` for one LiteRT part of ``version``; never raises for a bad file."""
    from classifier.litert import LiteRTModel, LiteRTUnavailable

    try:
        content = registry.litert_content(version, part)
    except RegistryError as error:
        logger.warning("%s: %s; using Keras instead", version, error)
        return None, str(error)
    if content is None:
        reason = registry.litert(version).get(part, {}).get("reason")
        return None, f"no LiteRT file ({reason or 'saved before LiteRT files'})"
    try:
        return LiteRTModel(content, threads), None
    except LiteRTUnavailable as error:
        logger.warning("%s: %s; using Keras instead", version, error)
        return None, str(error)


def load_served(registry: Registry, version: str, runtime: str = "litert", threads: int | None = None) -> ServedModel:
    """``version`` ready to score, with LiteRT when it has a checked file (and ``runtime`` allows), else Keras.

    ``threads`` is the number of threads the model may use, for either runtime (None: the runtime's default).
    RegistryError when the version cannot be served at all (missing, or its Keras model refused as well).
    """
    _check_runtime(runtime)
    note = None
    if runtime == "litert":
        # A release whose Keras model was damaged is refused whole, whichever runtime would have served it.
        registry.verify(version)
        info = registry.info(version)
        model, note = _litert_model(registry, version, "scoring", threads)
        if model is not None:
            problem = shape_problem(model.input_shape, model.output_shape[-1], len(info.labels))
            if problem is None:
                return ServedModel(version, list(info.labels), list(info.prohibited), model.image_size, model, "litert")
            note = f"LiteRT file {problem}"
    from classifier.embedding import traced_forward
    from classifier.runtime import configure_threads

    configure_threads(threads)
    loaded = registry.load(version)
    forward = traced_forward(loaded.model, loaded.image_size)
    return ServedModel(version, loaded.labels, loaded.prohibited, loaded.image_size, forward, "keras", note)


def load_feature_extractor(registry: Registry, version: str, threads: int | None = None):
    """``version``'s LiteRT feature extractor as a `classifier.embedding.FeatureExtractor`, or None.

    None when the version has no checked extractor file, no record of the cache variant its backbone fills, or
    unreadable hyper-parameters; the caller then embeds with the Keras backbone.
    """
    from classifier.embedding import FeatureExtractor, feature_key

    try:
        record = registry.metadata(version).get("feature_cache") or {}
        key = feature_key(registry.hparams(version))
    except RegistryError as error:
        logger.info("%s: no LiteRT feature extractor (%s)", version, error)
        return None
    if not record.get("variant"):
        return None
    model, why = _litert_model(registry, version, "features", threads)
    if model is None:
        logger.info("%s: embedding with Keras: %s", version, why)
        return None
    return FeatureExtractor(forward=model, variant=str(record["variant"]), key=key)
