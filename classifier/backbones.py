"""Frozen ImageNet feature extractors, by name, with their preprocessing inside the model.

Every backbone takes float32 RGB pixels in 0..255 of shape ``(batch, size, size, 3)`` and returns pooled features
``(batch, dim)``. Preprocessing lives in the model as ``Rescaling`` layers (never ``Lambda``) so a saved
classifier is self-contained and loads with Keras ``safe_mode``. TensorFlow is imported inside functions: the
platform forks worker processes and must not pay for, or share, TensorFlow state at import time.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from classifier.files import atomic_path

if TYPE_CHECKING:
    import keras

BACKBONES: tuple[str, ...] = ("mobilenet_v1", "inception_v3", "mobilenet_v2", "efficientnet_b0", "tiny")

_NATIVE_SIZES = {"mobilenet_v1": 224, "inception_v3": 299, "mobilenet_v2": 224, "efficientnet_b0": 224, "tiny": 32}

#: File name of the converted MobileNet V1 inside the cache directory (bump the suffix if the conversion changes).
MOBILENET_V1_FILE = "mobilenet_v1_1.0_224_imagenet-v1.keras"

# Keras application constructor and whether the model needs x / 127.5 - 1 in front of it.
_APPLICATIONS = {
    "inception_v3": ("InceptionV3", True),
    "mobilenet_v2": ("MobileNetV2", True),
    "efficientnet_b0": ("EfficientNetB0", False),
}

# Per-channel ImageNet standard deviation Keras' EfficientNet scales by (keras.applications.efficientnet).
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

#: Blocks whose pooled outputs, concatenated, are the default feature vector, per backbone (absent: the
#: backbone's final output). MobileNet V1's middle blocks generalise better than its last one to small product
#: photos: on Fashion-MNIST Pullover vs Coat blocks 9 + 11 beat the final features by about 0.03 accuracy
#: (docs/classifier.md).
DEFAULT_FEATURE_LAYERS = {"mobilenet_v1": "conv_pw_9_relu+conv_pw_11_relu"}

#: ``feature_layer`` value that selects the backbone's final pooled output explicitly.
FINAL_FEATURES = "output"

#: Separator of several layer names in one ``feature_layer`` value: their pooled features are concatenated.
LAYER_SEPARATOR = "+"

#: How a feature map becomes a vector. ``average``: one global average. ``symmetric``: averages over the top and
#: bottom halves of the map, each split into its middle third of columns and its two outer thirds together, so
#: where something sits (a collar at the top, a zip down the middle) survives pooling, and a mirrored photo
#: still pools the same regions.
POOLINGS = ("average", "symmetric")

#: Pooling of the default feature layers, per backbone (absent: ``average``).
DEFAULT_POOLINGS = {"mobilenet_v1": "symmetric"}

#: Seed of the random ``tiny`` backbone: the same weights in every process, so cached features stay valid.
TINY_SEED = 1234


class BackboneUnavailable(RuntimeError):
    """The backbone's weights cannot be obtained here (typically: offline and no local weights file)."""


def default_cache_dir() -> Path:
    """The directory for converted backbones when a caller names none: ``~/.cache/vigia``."""
    return Path.home() / ".cache" / "vigia"


def backbone_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The directory for converted backbones: ``cache_dir`` (``~`` expanded), else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def accepts_weights_file(name: str) -> bool:
    """Whether backbone ``name`` can load its ImageNet weights from a local file (``weights=``)."""
    return name in _APPLICATIONS


def native_size(name: str) -> int:
    """Image side length the backbone was trained at, used when no image size is configured."""
    _check_name(name)
    return _NATIVE_SIZES[name]


def default_feature_layer(name: str) -> str:
    """The layer whose pooled output a backbone's features come from by default (``"output"``: the last one)."""
    _check_name(name)
    return DEFAULT_FEATURE_LAYERS.get(name, FINAL_FEATURES)


def default_pooling(name: str) -> str:
    """The pooling used for a backbone's feature layers when the hyper-parameters name none."""
    _check_name(name)
    return DEFAULT_POOLINGS.get(name, "average")


def default_standardize(name: str) -> bool:
    """Whether heads on this backbone standardise features by default: yes for ImageNet features.

    The random ``tiny`` test backbone is the exception: standardising its near-constant channels blows noise up
    to the scale of signal, and a head on a few dozen images then fits individual pictures.
    """
    _check_name(name)
    return name != "tiny"


def build_backbone(
    name: str,
    image_size: int | None = None,
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    feature_layer: str | None = None,
    pooling: str = "average",
) -> keras.Model:
    """Build the frozen feature extractor ``name`` for ``image_size`` x ``image_size`` inputs.

    ``weights`` is a local weights file for the Keras application backbones (:func:`accepts_weights_file`; None:
    Keras' ImageNet download). ``cache_dir`` holds the converted ``mobilenet_v1`` (default
    :func:`default_cache_dir`). ``feature_layer`` cuts the network after that layer
    (or after several, joined by ``+``) and pools each output with ``pooling`` (see :data:`POOLINGS`),
    concatenating the vectors; None or ``"output"`` keeps the backbone's own pooled output. Layers above the
    highest cut are never run.
    """
    _check_name(name)
    size = int(image_size) if image_size else native_size(name)
    if size < 32:
        raise ValueError(f"image_size must be at least 32, got {size}")
    if name == "tiny":
        model = _tiny(size)
    elif name == "mobilenet_v1":
        if weights is not None:
            raise ValueError("mobilenet_v1 takes its weights from the bundled ImageNet graph; weights= is not used")
        model = _mobilenet_v1_features(size, backbone_cache_dir(cache_dir))
    else:
        model = _keras_application(name, size, weights)
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if feature_layer and feature_layer != FINAL_FEATURES:
        model = _cut(model, feature_layer.split(LAYER_SEPARATOR), pooling)
    elif pooling != "average":
        raise ValueError(f"{pooling} pooling needs a named feature layer; the backbone's output is already pooled")
    model.trainable = False
    return model


def _cut(model: keras.Model, layer_names: list[str], pooling: str) -> keras.Model:
    """The backbone up to the highest of ``layer_names``, each pooled, concatenated: a sub-graph sharing layers."""
    import keras

    pooled = []
    for layer_name in layer_names:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise ValueError(f"{model.name} has no layer {layer_name!r} to take features from") from None
        if len(layer.output.shape) != 4:
            raise ValueError(f"feature layer {layer_name!r} must output a feature map (batch, height, width, channels)")
        if pooling == "symmetric":
            pooled.append(_symmetric_pool(layer.output, layer_name))
        else:
            pooled.append(keras.layers.GlobalAveragePooling2D(name=f"pool_{layer_name}")(layer.output))
    features = keras.layers.Concatenate(name="pool_concat")(pooled) if len(pooled) > 1 else pooled[0]
    return keras.Model(model.input, features, name=f"{model.name}_{'_'.join(layer_names)}")


def _symmetric_pool(feature_map, layer_name: str):
    """Four region averages of a (batch, h, w, c) map: {top, bottom} x {middle columns, outer columns}.

    Built from ``Cropping2D``, ``GlobalAveragePooling2D`` and ``Average`` so the saved model needs no custom
    code. The outer columns are two strips of equal width, so the average of their two means is the mean over
    both.
    """
    import keras

    height, width = int(feature_map.shape[1]), int(feature_map.shape[2])
    side = width // 3
    if height < 2 or side < 1:
        raise ValueError(
            f"symmetric pooling needs a feature map of at least 2x3; {layer_name!r} gives {height}x{width} "
            "at this image size (use a larger image or average pooling)"
        )
    top = height // 2

    def mean(rows: tuple[int, int], columns: tuple[int, int], region: str):
        cropped = keras.layers.Cropping2D((rows, columns), name=f"crop_{layer_name}_{region}")(feature_map)
        return keras.layers.GlobalAveragePooling2D(name=f"pool_{layer_name}_{region}")(cropped)

    regions = []
    for half, rows in (("top", (0, height - top)), ("bottom", (top, 0))):
        regions.append(mean(rows, (side, side), f"{half}_middle"))
        left = mean(rows, (0, width - side), f"{half}_left")
        right = mean(rows, (width - side, 0), f"{half}_right")
        regions.append(keras.layers.Average(name=f"pool_{layer_name}_{half}_outer")([left, right]))
    return keras.layers.Concatenate(name=f"pool_{layer_name}")(regions)


def imagenet_classifier(name: str = "mobilenet_v1", cache_dir: str | Path | None = None) -> keras.Model:
    """The full 1000-class ImageNet classifier behind a backbone (float RGB 0..255 in, softmax out).

    Classes follow Keras' ImageNet order (``keras.applications.imagenet_utils.decode_predictions``). Used to check
    that the offline import is right: a correct MobileNet V1 calls scikit-image's ``chelsea()`` an Egyptian cat.
    """
    if name != "mobilenet_v1":
        raise ValueError("only mobilenet_v1 ships its ImageNet classifier offline")
    import keras

    model = _from_cache(cache_dir, lambda path: keras.saving.load_model(path, safe_mode=True, compile=False))
    model.trainable = False
    return model


def converted_mobilenet_v1(cache_dir: str | Path | None = None) -> Path:
    """Path of the cached Keras conversion of the bundled MobileNet V1, converting it on first use.

    The conversion (a few seconds) runs once per cache directory. It is written to a temporary file and renamed,
    so concurrent workers never load a half-written model; two racing conversions write identical files.
    """
    from classifier import mobilenet_v1_import

    directory = backbone_cache_dir(cache_dir)
    path = directory / MOBILENET_V1_FILE
    if path.is_file():
        return path
    try:
        model = mobilenet_v1_import.convert()
    except mobilenet_v1_import.GraphUnavailable as exc:
        raise BackboneUnavailable(f"mobilenet_v1 cannot be built: {exc}") from exc
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, prefix=".mobilenet_v1-", suffix=".keras") as temporary:
        model.save(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; workers may run as another user
    return path


def _from_cache(cache_dir: str | Path | None, load):
    """``load(path)`` of the cached conversion; an unreadable cache file is converted again, once."""
    path = converted_mobilenet_v1(cache_dir)
    try:
        return load(path)
    except Exception:
        # A file damaged after it was written (disk trouble, a stray edit) is cheaper to rebuild than to debug.
        path.unlink(missing_ok=True)
        return load(converted_mobilenet_v1(cache_dir))


def _check_name(name: str) -> None:
    if name not in _NATIVE_SIZES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _mobilenet_v1_features(size: int, cache_dir: Path) -> keras.Model:
    """MobileNet V1 up to global average pooling (1024 features) at any input size.

    MobileNet's weights do not depend on the input size, so the network is built at ``size`` and the converted
    224 px weights are copied over by layer name.
    """
    import keras

    weights = _from_cache(cache_dir, _mobilenet_v1_weights)
    inputs = keras.Input((size, size, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inputs)
    base = keras.applications.MobileNet(input_tensor=scaled, include_top=False, weights=None, pooling="avg")
    model = keras.Model(inputs, base.output, name="mobilenet_v1_features")
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(weights[layer.name])
    return model


def _mobilenet_v1_weights(path: Path) -> dict[str, list]:
    """Layer weights of the converted classifier, memoised per file version so repeated builds skip the load."""
    stat = path.stat()
    return _load_layer_weights(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load_layer_weights(path: str, mtime_ns: int, size: int) -> dict[str, list]:
    import keras

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def _keras_application(name: str, size: int, weights: str | Path | None) -> keras.Model:
    """An ImageNet Keras application without its top, from a local weights file or Keras' download."""
    import keras

    constructor, scale = _APPLICATIONS[name]
    source = weights or None
    if source is not None and not Path(source).expanduser().is_file():
        raise BackboneUnavailable(f"weights file for {name} not found: {source}")
    factory = getattr(keras.applications, constructor)
    try:
        # Built standalone first so Keras loads the weights file (or its download) into exactly the layout it was
        # saved from; the weights are then copied into the model with preprocessing in front.
        reference = factory(
            include_top=False,
            weights=str(Path(source).expanduser()) if source else "imagenet",
            input_shape=(size, size, 3),
            pooling="avg",
        )
    except Exception as exc:
        if source is not None:
            raise BackboneUnavailable(f"cannot load {name} weights from {source}: {_one_line(exc)}") from exc
        raise BackboneUnavailable(
            f"{name} ImageNet weights could not be downloaded ({_one_line(exc)}); pass a local weights file "
            f"(weights=..., HParams.backbone_weights, or VIGIA_BACKBONE_WEIGHTS for the desk and the command line), "
            f"or use the offline backbone mobilenet_v1"
        ) from exc
    inputs = keras.Input((size, size, 3), name="image")
    # EfficientNet normalises inside its own graph; the others expect x / 127.5 - 1.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inputs) if scale else inputs
    base = factory(include_top=False, weights=None, input_tensor=x, pooling="avg")
    model = keras.Model(inputs, base.output, name=f"{name}_features")
    source_layers = [layer for layer in reference.layers if layer.weights]
    target_layers = [layer for layer in model.layers if layer.weights]
    if len(source_layers) != len(target_layers):
        raise BackboneUnavailable(f"{name}: unexpected layer layout ({len(source_layers)} vs {len(target_layers)})")
    # Same constructor, same layer order; names are not used because InceptionV3's are auto-numbered per process.
    for source_layer, target_layer in zip(source_layers, target_layers, strict=True):
        target_layer.set_weights(source_layer.get_weights())
        if isinstance(target_layer, keras.layers.Normalization):
            # It computes from tensors derived in finalize_state; set_weights alone would not reach them.
            target_layer.finalize_state()
    if name == "efficientnet_b0":
        _match_efficientnet_imagenet_scaling(model)
    return model


def _match_efficientnet_imagenet_scaling(model: keras.Model) -> None:
    """Apply the input scaling Keras adds to EfficientNet only when it downloads the ImageNet weights itself.

    With ``weights="imagenet"`` Keras inserts an extra per-channel ``Rescaling(1 / sqrt(stddev))`` after the input
    normalisation to match the original implementation; with a weights file or ``weights=None`` it does not,
    although the file holds the same ImageNet weights. Folding that factor into the normalisation variance gives
    identical features whichever way the weights arrived, without an extra layer.
    """
    import keras
    import numpy as np

    normalization = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    mean, variance, count = normalization.get_weights()
    normalization.set_weights([mean, variance * np.asarray(_IMAGENET_STDDEV_RGB, dtype=variance.dtype), count])
    normalization.finalize_state()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


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
