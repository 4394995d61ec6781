"""Rebuild the ImageNet MobileNet V1 shipped inside PyPI ``nudity`` as a Keras model, fully offline.

``nudity`` carries a TF1 frozen graph written by TensorFlow's classic ``retrain.py``: an intact ImageNet MobileNet
V1 1.0/224 (TF-slim node names, 1001 classes with "background" at index 0) plus a retrained two-class head that we
ignore. Every weight is a ``Const`` node, so the conversion only reads tensors out of the ``GraphDef`` and copies
them onto ``keras.applications.MobileNet(weights=None)``; none of that package's code is imported or run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

GRAPH_PACKAGE = "nudity"
GRAPH_FILE = "files/retrained_graph.pb"
#: TF-slim batch-norm epsilon of MobileNet V1, identical to the one Keras builds its MobileNet with.
BATCHNORM_EPSILON = 1e-3
_PREFIX = "MobilenetV1/"
_BLOCKS = 13


class GraphUnavailable(RuntimeError):
    """The frozen graph is missing or does not hold a complete MobileNet V1."""


def graph_path() -> Path:
    """Locate the frozen graph without importing ``nudity`` (its ``__init__`` runs TF1-era code)."""
    spec = importlib.util.find_spec(GRAPH_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GraphUnavailable(f"the {GRAPH_PACKAGE} package is not installed (pip install nudity==0.2.3)")
    path = Path(spec.submodule_search_locations[0]) / GRAPH_FILE
    if not path.is_file():
        raise GraphUnavailable(f"{path} is missing from the installed {GRAPH_PACKAGE} package")
    return path


def read_constants(path: Path) -> dict[str, np.ndarray]:
    """Every ``Const`` tensor of the MobileNet V1 part of the graph, by node name."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    try:
        graph.ParseFromString(Path(path).read_bytes())
    except Exception as exc:  # protobuf raises DecodeError, which is not part of a stable public API
        raise GraphUnavailable(f"{path} is not a TensorFlow GraphDef: {exc}") from exc
    return {
        node.name: tf.make_ndarray(node.attr["value"].tensor)
        for node in graph.node
        if node.op == "Const" and node.name.startswith(_PREFIX)
    }


def keras_weights(constants: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map TF-slim tensors onto Keras MobileNet layer names, in the order ``layer.set_weights`` expects."""
    weights: dict[str, list[np.ndarray]] = {}

    def take(name: str) -> np.ndarray:
        try:
            return constants[_PREFIX + name]
        except KeyError:
            raise GraphUnavailable(f"the graph has no tensor {_PREFIX + name}; it is not MobileNet V1 1.0") from None

    def batchnorm(scope: str) -> list[np.ndarray]:
        return [take(f"{scope}/BatchNorm/{part}") for part in ("gamma", "beta", "moving_mean", "moving_variance")]

    weights["conv1"] = [take("Conv2d_0/weights")]
    weights["conv1_bn"] = batchnorm("Conv2d_0")
    for block in range(1, _BLOCKS + 1):
        weights[f"conv_dw_{block}"] = [take(f"Conv2d_{block}_depthwise/depthwise_weights")]
        weights[f"conv_dw_{block}_bn"] = batchnorm(f"Conv2d_{block}_depthwise")
        weights[f"conv_pw_{block}"] = [take(f"Conv2d_{block}_pointwise/weights")]
        weights[f"conv_pw_{block}_bn"] = batchnorm(f"Conv2d_{block}_pointwise")
    # Slim's classifier has 1001 outputs with "background" first; Keras' ImageNet order is the remaining 1000.
    weights["conv_preds"] = [take("Logits/Conv2d_1c_1x1/weights")[..., 1:], take("Logits/Conv2d_1c_1x1/biases")[1:]]
    epsilons = {
        float(value)
        for name, value in constants.items()
        if name.endswith("/BatchNorm/batchnorm/add/y") and np.ndim(value) == 0
    }
    if epsilons and not all(abs(eps - BATCHNORM_EPSILON) < 1e-9 for eps in epsilons):
        raise GraphUnavailable(f"unexpected batch-norm epsilon {sorted(epsilons)} in the graph")
    return weights


def build_classifier(weights: dict[str, list[np.ndarray]], image_size: int = 224) -> keras.Model:
    """The 1000-class ImageNet classifier: float RGB 0..255 in, softmax out, preprocessing inside."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inputs)
    model = keras.applications.MobileNet(input_tensor=scaled, include_top=True, weights=None, classes=1000)
    model = keras.Model(model.inputs, model.outputs, name="mobilenet_v1_imagenet")
    assign(model, weights)
    return model


def assign(model: keras.Model, weights: dict[str, list[np.ndarray]]) -> None:
    """Copy weights onto the model's layers of the same names; every weighted layer must be covered."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise GraphUnavailable(f"no weights for layer {layer.name}")
        layer.set_weights(weights[layer.name])


def convert(path: Path | None = None) -> keras.Model:
    """Read the frozen graph (default: the one inside ``nudity``) and return the Keras ImageNet classifier."""
    return build_classifier(keras_weights(read_constants(path or graph_path())))
