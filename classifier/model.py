"""Keras building blocks: the head on pooled features, the saved image->softmax model, distortions, fine-tuning.

No Lambda layers anywhere: a saved model must load with Keras `safe_mode`, and a Lambda layer is arbitrary code.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from classifier.hparams import HParams

if TYPE_CHECKING:
    import keras


#: No feature's variance is taken as less than this share of the features' mean variance when standardising.
#: A feature that (almost) never fires on a few hundred training images would otherwise be divided by nearly
#: zero, and the first new image on which it fires gets a huge standardised value that swamps the rest of the
#: logit: with 130 training images, heads standardised without a floor scored worse than chance on new images.
VARIANCE_FLOOR_SHARE = 0.1


def standardization_moments(training_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of the training features, the variance floored (`VARIANCE_FLOOR_SHARE`)."""
    features = np.asarray(training_features, dtype=np.float64)
    mean = features.mean(axis=0)
    variance = features.var(axis=0)
    floor = VARIANCE_FLOOR_SHARE * float(variance.mean())
    return mean.astype(np.float32), np.maximum(variance, max(floor, 1e-12)).astype(np.float32)


def build_head(
    feature_dim: int, n_labels: int, hparams: HParams, training_features: np.ndarray | None = None
) -> keras.Model:
    """Softmax over the labels on the pooled features, optionally behind one small hidden layer with dropout.

    With ``hparams.standardize`` the head starts with a ``Normalization`` layer adapted on
    ``training_features``: its mean and variance are weights of the saved model, so scoring standardises exactly
    as training did, and the model still loads with ``safe_mode`` (no Lambda). Without training features the
    layer starts as the identity.
    """
    import keras

    regularizer = keras.regularizers.L2(hparams.l2) if hparams.l2 else None
    seed = hparams.seed
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    if hparams.resolved_standardize():
        if training_features is None or not len(training_features):
            # Nothing to adapt to (a head built only to time a forward pass): the same layer, as the identity.
            normalization = keras.layers.Normalization(
                axis=-1, mean=np.zeros(feature_dim), variance=np.ones(feature_dim), name="head_standardize"
            )
        else:
            mean, variance = standardization_moments(training_features)
            normalization = keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="head_standardize")
        x = normalization(x)
    if hparams.hidden_units:
        if hparams.dropout:
            x = keras.layers.Dropout(hparams.dropout, seed=seed, name="head_dropout_in")(x)
        x = keras.layers.Dense(
            hparams.hidden_units,
            activation="relu",
            kernel_regularizer=regularizer,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="head_hidden",
        )(x)
    if hparams.dropout:
        x = keras.layers.Dropout(hparams.dropout, seed=seed + 1, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        n_labels,
        activation="softmax",
        kernel_regularizer=regularizer,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2),
        name="head_softmax",
    )(x)
    return keras.Model(inputs, outputs, name="head")


def build_classifier(backbone: keras.Model, head: keras.Model, image_size: int) -> keras.Model:
    """The one model that is saved and served: image pixels (0..255) in, label probabilities out."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    outputs = head(backbone(inputs))
    return keras.Model(inputs, outputs, name="classifier")


def classifier_parts(model: keras.Model) -> tuple[keras.Model, keras.Model] | None:
    """``(backbone, head)`` of a model `build_classifier` made, or None for a model of another shape.

    Scoring cached features, embedding and LiteRT conversion take the saved classifier apart the same way.
    """
    inner = [layer for layer in getattr(model, "layers", []) if layer.weights]
    if len(inner) != 2 or inner[1].name != "head":
        return None
    return inner[0], inner[1]


def has_lambda_layer(config) -> bool:
    """Whether a saved model's config (the parsed ``config.json`` of a .keras archive) holds a Lambda layer."""
    if isinstance(config, dict):
        return config.get("class_name") in {"Lambda", "TFOpLambda"} or any(map(has_lambda_layer, config.values()))
    return isinstance(config, list) and any(map(has_lambda_layer, config))


def shape_problem(input_shape, outputs: int, labels: int) -> str | None:
    """What is wrong with a saved model's inputs and outputs for scoring ``labels`` labels, or None."""
    shape = tuple(input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        return f"does not take square RGB images (input shape {shape})"
    if outputs != labels:
        return f"outputs {outputs} classes for {labels} labels"
    return None


def build_distortion(hparams: HParams) -> keras.Model:
    """Random crop/scale, brightness and mirror, as retrain.py did; active only in training mode."""
    import keras

    seed = hparams.seed
    steps = []
    if hparams.flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed, name="distort_flip"))
    if hparams.scale_fraction:
        # Zooming in by up to the scale fraction is a random scale; the translation makes it a random crop.
        steps.append(
            keras.layers.RandomZoom(
                (-hparams.scale_fraction, 0.0), fill_mode="nearest", seed=seed, name="distort_scale"
            )
        )
    if hparams.crop_fraction:
        steps.append(
            keras.layers.RandomTranslation(
                hparams.crop_fraction, hparams.crop_fraction, fill_mode="nearest", seed=seed, name="distort_crop"
            )
        )
    if hparams.brightness_fraction:
        steps.append(
            keras.layers.RandomBrightness(
                hparams.brightness_fraction, value_range=(0.0, 255.0), seed=seed, name="distort_brightness"
            )
        )
    return keras.Sequential(steps, name="distortion")


def leaf_layers(model: keras.Layer) -> list[keras.Layer]:
    """All layers of a possibly nested model, innermost first in graph order."""
    layers = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and layer.layers:
            layers.extend(leaf_layers(layer))
        else:
            layers.append(layer)
    return layers


def unfreeze_top(backbone: keras.Model, count: int) -> list[str]:
    """Make the top `count` weighted non-BatchNorm layers trainable; everything else, BatchNorm included, frozen.

    BatchNorm stays frozen (inference mode) because re-estimating its statistics on a few hundred images wrecks
    the ImageNet features. Returns the names of the layers made trainable.
    """
    import keras

    backbone.trainable = True
    candidates = []
    for layer in leaf_layers(backbone):
        layer.trainable = False
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
            candidates.append(layer)
    chosen = candidates[-count:] if count else []
    for layer in chosen:
        layer.trainable = True
    return [layer.name for layer in chosen]


def freeze(model: keras.Model) -> None:
    """Make the model and every layer inside it untrainable again, e.g. after fine-tuning."""
    model.trainable = False
    for layer in leaf_layers(model):
        layer.trainable = False


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of a model's weights, so features from different weights never share a cache."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:10]


def split_backbone(backbone: keras.Model, count: int):
    """Split a chain-shaped backbone below its top `count` weighted layers: (bottom, top, trainable names).

    The bottom stays frozen, so its output (a small feature map) can be cached like a bottleneck, and the top
    layers are fine-tuned on cached maps in seconds instead of running every image through the whole network
    each epoch. The top re-uses the backbone's own layer objects, so training it updates the backbone that is
    saved. Returns None when the layers above the cut are not a simple chain (e.g. residual connections), in
    which case fine-tuning falls back to running pixels through the backbone.
    """
    import keras

    layers = backbone.layers
    candidates = [layer for layer in layers if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    if not count or count > len(candidates) or any(hasattr(layer, "layers") for layer in layers):
        return None
    first = candidates[-count]
    start = layers.index(first)

    def first_node(layer):
        # The node from the backbone's own graph; later calls (an earlier split) add more nodes after it.
        return layer._inbound_nodes[0]

    previous = layers[start - 1]
    try:
        for layer in layers[start:]:
            inputs = first_node(layer).input_tensors
            if len(inputs) != 1 or inputs[0] is not first_node(previous).output_tensors[0]:
                return None
            previous = layer
        if first_node(previous).output_tensors[0] is not backbone.outputs[0]:
            return None
        cut = first_node(first).input_tensors[0]
        bottom = keras.Model(backbone.input, cut, name=f"{backbone.name}_bottom")
        top_input = keras.Input(tuple(cut.shape[1:]), name="bottleneck")
        x = top_input
        for layer in layers[start:]:
            x = layer(x)
        top = keras.Model(top_input, x, name=f"{backbone.name}_top")
    except (AttributeError, ValueError, TypeError):
        return None
    return bottom, top, [layer.name for layer in candidates[-count:]], layers[start - 1].name
