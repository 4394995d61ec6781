"""Run a version's LiteRT file with the `ai-edge-litert` interpreter: the same model, without TensorFlow.

Scoring is one forward pass per batch, and TensorFlow spends a good part of it on its own machinery: the LiteRT
interpreter runs the same frozen graph (converted and checked equal at save time, `classifier.conversion`) with
XNNPACK at about twice the speed, loads it in a fraction of a second and, since importing it does not import
TensorFlow, a process that only serves LiteRT keeps a small resident footprint. Nothing in this module imports
TensorFlow or Keras, and nothing in it may: a scoring process relies on that.

An interpreter is not safe to call from two threads at once (the web server answers `/score` from several), so
each `LiteRTModel` serialises its calls; one is built per process and model, never per call.
"""

from __future__ import annotations

import threading

import numpy as np

#: Most images the interpreter takes in one invocation; a larger batch runs in slices of this size. The tensor
#: arena grows with the batch (about 6 MB per 224 px image for MobileNet V1: 32 images put a scoring child near
#: 330 MB resident, 16 near 200 MB), while past 8 images a larger batch bought no speed (docs/runtimes.md).
MAX_BATCH = 16


class LiteRTUnavailable(RuntimeError):
    """The LiteRT file cannot be used here: the interpreter is not installed or refuses the file."""


def interpreter_class():
    """The `ai-edge-litert` interpreter class; LiteRTUnavailable when the package is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:  # an install without the package serves with Keras instead
        raise LiteRTUnavailable(f"the ai-edge-litert interpreter is not installed ({error})") from error
    return Interpreter


class LiteRTModel:
    """One interpreter over one LiteRT model: call it with a float32 batch, get the output as a numpy array.

    The input is resized to each batch's shape when it changes (the graph takes any batch size), so a batch of
    one costs one image's work; batches above `MAX_BATCH` run in slices of it. ``threads`` is the interpreter's
    (and XNNPACK's) thread count; None or 0 lets LiteRT choose. XNNPACK, the interpreter's default CPU delegate,
    runs the float32 graph.
    """

    def __init__(self, content: bytes, threads: int | None = None):
        interpreter = interpreter_class()
        try:
            self._interpreter = interpreter(model_content=bytes(content), num_threads=threads or None)
        except (ValueError, RuntimeError) as error:
            raise LiteRTUnavailable(f"the LiteRT interpreter refuses this file: {error}") from error
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise LiteRTUnavailable(f"expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self._input = inputs[0]["index"]
        self._output = outputs[0]["index"]
        self.input_shape = tuple(int(d) for d in inputs[0]["shape_signature"])
        self.output_shape = tuple(int(d) for d in outputs[0]["shape_signature"])
        self.threads = threads
        self._shape: tuple | None = None
        self._lock = threading.Lock()

    @property
    def image_size(self) -> int:
        """The side length of the square images the model takes (its input is ``(batch, size, size, 3)``)."""
        return self.input_shape[1]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for ``batch`` (any leading size, pixels as float32 0..255)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not len(batch):
            return np.zeros((0, *self.output_shape[1:]), dtype=np.float32)
        with self._lock:
            return np.concatenate([self._invoke(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, batch.shape, strict=True)
            self._interpreter.allocate_tensors()
            self._shape = batch.shape
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(batch))
        self._interpreter.invoke()
        # The output buffer is the interpreter's own and is overwritten by the next call.
        return self._interpreter.get_tensor(self._output).copy()
