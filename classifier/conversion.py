"""Convert a saved classifier into LiteRT files and prove them equal to the Keras model before anything serves them.

A version gets two LiteRT files (`classifier.registry` writes them): the whole scoring model, image in and
probabilities out, and its frozen backbone, the feature extractor that fills the bottleneck cache. Both are
converted by TensorFlow's own `TFLiteConverter` from the traced inference function that serves the Keras model
today (`classifier.embedding.traced_forward`), with TensorFlow Lite's built-in operators only: no Lambda, no
custom or TensorFlow ("flex") operators, so the plain interpreter runs them.

A conversion is only as good as its check. Each file is run on a check batch, the smoke image plus a sample of
the version's own training images, next to the Keras model, and kept only if every probability is within
`TOLERANCE` of Keras' and every image gets the same top label. The extractor is judged on what its features are
for: the head's probabilities on LiteRT features against the head's probabilities on Keras features. A file that
fails is not written; the version then serves with Keras, and its record says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Largest absolute difference in any probability the LiteRT model may show against Keras on the check batch.
TOLERANCE = 1e-4

#: The two LiteRT files of a version: the whole scoring model and the feature extractor of the bottleneck cache.
SCORING, FEATURES = "scoring", "features"


@dataclass(frozen=True)
class Equivalence:
    """How far a LiteRT model's probabilities are from Keras' on a check batch."""

    images: int
    max_abs_diff: float
    argmax_agrees: bool

    @property
    def ok(self) -> bool:
        """Whether the difference is within `TOLERANCE` (and finite) and every image keeps its top label."""
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= TOLERANCE and self.argmax_agrees


def compare(reference: np.ndarray, candidate: np.ndarray) -> Equivalence:
    """The equivalence of two probability arrays over the same images (shape ``(images, labels)``)."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        return Equivalence(images=len(reference), max_abs_diff=float("inf"), argmax_agrees=False)
    difference = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    agrees = bool(np.array_equal(reference.argmax(axis=-1), candidate.argmax(axis=-1)))
    return Equivalence(images=len(reference), max_abs_diff=difference, argmax_agrees=agrees)


@dataclass
class Converted:
    """One part's outcome: the file's bytes when it passed the check, else None and the reason."""

    part: str
    content: bytes | None
    record: dict = field(default_factory=dict)


def convert(model, image_size: int) -> bytes:
    """The LiteRT flatbuffer of ``model``'s traced inference pass, built-in operators only, weights frozen in.

    Keras 3 keeps each weight in a TensorFlow variable behind its own `keras.Variable`; the converter freezes
    only variables it can reach from the object it is given, so a `tf.Module` holds them next to the function.
    """
    import tensorflow as tf

    from classifier.embedding import traced_forward

    module = tf.Module()
    module.frozen = [getattr(variable, "value", variable) for variable in model.variables]
    module.forward = traced_forward(model, image_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.forward.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    return converter.convert()


def check_batch(image_size: int, images: np.ndarray | None) -> np.ndarray:
    """The smoke image followed by ``images`` (uint8 or float, ``(n, size, size, 3)``) as one float32 batch."""
    from classifier.scoring import smoke_batch

    parts = [smoke_batch(image_size)]
    if images is not None and len(images):
        parts.append(np.asarray(images, dtype=np.float32).reshape(-1, image_size, image_size, 3))
    return np.concatenate(parts)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _checked(part: str, make, reference: np.ndarray, probabilities, batch: np.ndarray) -> Converted:
    """Convert (``make()``), run the result on ``batch`` and keep it only if ``probabilities`` of it match."""
    from classifier.litert import LiteRTModel, LiteRTUnavailable

    started = time.monotonic()
    try:
        content = make()
        candidate = probabilities(LiteRTModel(content)(batch))
    except LiteRTUnavailable as error:
        return Converted(part, None, {"ok": False, "reason": str(error)})
    except Exception as error:  # the converter raises many kinds; any of them means "serve with Keras"
        return Converted(part, None, {"ok": False, "reason": f"conversion failed: {_one_line(error)}"})
    equivalence = compare(reference, candidate)
    record = {
        "ok": equivalence.ok,
        "check_images": equivalence.images,
        "max_abs_diff": equivalence.max_abs_diff,
        "argmax_agrees": equivalence.argmax_agrees,
        "tolerance": TOLERANCE,
        "seconds": round(time.monotonic() - started, 3),
        "bytes": len(content),
    }
    if not equivalence.ok:
        record["reason"] = (
            f"differs from the Keras model on the check batch of {equivalence.images} images: max abs difference "
            f"{equivalence.max_abs_diff:.2g} (tolerance {TOLERANCE:g})"
            + ("" if equivalence.argmax_agrees else ", and the top label changes")
        )
        return Converted(part, None, record)
    return Converted(part, content, record)


def write_passing(directory: Path, converted: list[Converted], names: dict[str, str]) -> dict:
    """Write each part that passed into ``directory`` under ``names[part]``, its sha256 beside it; the records."""
    from classifier.hashing import bytes_sha256

    records = {}
    for part in converted:
        if part.content is not None:
            (directory / names[part.part]).write_bytes(part.content)
            (directory / f"{names[part.part]}.sha256").write_text(bytes_sha256(part.content) + "\n")
            part.record["file"] = names[part.part]
        records[part.part] = part.record
    return records


def convert_version(
    model, image_size: int, check_images: np.ndarray | None, *, features: bool, features_content: bytes | None = None
) -> list[Converted]:
    """The scoring model's LiteRT file and, with ``features``, the feature extractor's, each checked on one batch.

    ``features_content`` is an extractor file an earlier version of the same frozen backbone already has: it is
    checked on this batch like a new conversion, and only converted again when it fails.
    """
    from classifier.embedding import traced_forward
    from classifier.model import classifier_parts

    batch = check_batch(image_size, check_images)
    reference = np.asarray(traced_forward(model, image_size)(batch))
    results = [_checked(SCORING, lambda: convert(model, image_size), reference, np.asarray, batch)]
    parts = classifier_parts(model) if features else None
    if features and parts is None:
        results.append(Converted(FEATURES, None, {"ok": False, "reason": "the model is not a backbone and a head"}))
    elif parts is not None:
        backbone, head = parts

        def through_head(features_out):
            return np.asarray(head(np.asarray(features_out, dtype=np.float32), training=False))

        attempt = None
        if features_content is not None:
            attempt = _checked(FEATURES, lambda: features_content, reference, through_head, batch)
            attempt.record["reused"] = True
        if attempt is None or attempt.content is None:
            attempt = _checked(FEATURES, lambda: convert(backbone, image_size), reference, through_head, batch)
        results.append(attempt)
    return results
