"""Frozen ImageNet feature extractors, by name, with their preprocessing inside the model.

Every backbone takes float32 RGB pixels in 0..255 of shape ``(batch, size, size, 3)`` and returns pooled features
``(batch, dim)``. Preprocessing lives in the model as ``Rescaling`` layers (never ``Lambda``) so a saved
classifier is self-contained and loads with Keras ``safe_mode``. TensorFlow is imported inside functions: the
platform forks worker processes and must not pay for, or share, TensorFlow state at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

BACKBONES: tuple[str, ...] = ("mobilenet_v1", "inception_v3", "mobilenet_v2", "efficientnet_b0", "tiny")

_NATIVE_SIZES = {"mobilenet_v1": 224, "inception_v3": 299, "mobilenet_v2": 224, "efficientnet_b0": 224, "tiny": 32}

#: Seed of the random ``tiny`` backbone: the same weights in every process, so cached features stay valid.
TINY_SEED = 1234


class BackboneUnavailable(RuntimeError):
    """The backbone's weights cannot be obtained here (typically: offline and no local weights file)."""


def default_cache_dir() -> Path:
    """Directory for converted backbones (``VIGIA_BACKBONE_CACHE``, default ``~/.cache/vigia``)."""
    configured = os.environ.get("VIGIA_BACKBONE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "vigia"


def native_size(name: str) -> int:
    """Image side length the backbone was trained at, used when no image size is configured."""
    _check_name(name)
    return _NATIVE_SIZES[name]


def build_backbone(
    name: str,
    image_size: int | None = None,
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> keras.Model:
    """Build the frozen feature extractor ``name`` for ``image_size`` x ``image_size`` inputs.

    ``weights`` is a local weights file for the Keras application backbones (falling back to the environment
    variable ``VIGIA_BACKBONE_WEIGHTS``, then to Keras' ImageNet download). ``cache_dir`` holds the converted
    ``mobilenet_v1`` (default :func:`default_cache_dir`).
    """
    _check_name(name)
    size = int(image_size) if image_size else native_size(name)
    if size < 32:
        raise ValueError(f"image_size must be at least 32, got {size}")
    if name == "tiny":
        model = _tiny(size)
    else:
        raise BackboneUnavailable(f"backbone {name} is not available yet")
    model.trainable = False
    return model


def _check_name(name: str) -> None:
    if name not in _NATIVE_SIZES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _tiny(size: int) -> keras.Model:
    """A small random conv net: fast enough for tests, deterministic so cached features stay comparable."""
    import keras

    def conv(filters: int, seed: int):
        return keras.layers.Conv2D(
            filters,
            3,
            strides=2,
            padding="same",
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=TINY_SEED + seed),
            bias_initializer="zeros",
            name=f"tiny_conv{seed}",
        )

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inputs)
    x = conv(16, 1)(x)
    x = conv(32, 2)(x)
    x = conv(32, 3)(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="tiny")
