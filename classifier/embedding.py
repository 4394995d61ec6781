"""The backbone's forward pass over examples, through the bottleneck cache: decode, batch, embed, report progress.

Embedding is most of what a retrain costs, so every path that turns examples into features comes through here:
training (`classifier.training`), embedding ahead of training as moderators decide images (`embed_examples`), and
scoring a saved model on cached features (`classifier.evaluation`). Features found in the cache are reused;
only new images are decoded and run through the backbone, in batches of `EMBED_BATCH`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.cache import BottleneckCache
from classifier.data import Example, split_of
from classifier.hparams import HParams

#: ``progress(phase, done, total)``: how long-running steps report, e.g. ("embedding", 10, 60).
Progress = Callable[[str, int, int], None]

#: Images per backbone call: large enough to amortise the call, small enough to bound memory at 299 px.
EMBED_BATCH = 32


@dataclass(frozen=True)
class FeatureExtractor:
    """A version's frozen backbone as a ready forward pass (its LiteRT file), and which cached features it makes.

    ``variant`` is the cache namespace its features belong to and ``key`` the `feature_key` of the
    hyper-parameters it was trained with: a caller whose hyper-parameters give the same key (or whose backbone
    gives the same variant) can embed through it instead of building and tracing the Keras backbone.
    """

    forward: Callable[[np.ndarray], np.ndarray]
    variant: str
    key: tuple
    runtime: str = "litert"

    @property
    def image_size(self) -> int:
        """The input size it takes: features at another size are another cache's, whatever the variant says."""
        return int(self.key[1])


def feature_key(hparams: HParams) -> tuple:
    """What decides a frozen backbone's features: backbone, image size, weights file, feature layers and pooling."""
    return (
        hparams.backbone,
        hparams.resolved_image_size(),
        str(hparams.backbone_weights or ""),
        hparams.resolved_feature_layer(),
        hparams.resolved_pooling(),
    )


def no_progress(phase: str, current: int, total: int) -> None:
    """A progress function that reports nowhere (for callers that pass none)."""
    return None


def traced_forward(model, image_size: int):
    """The model's inference pass, traced once for any batch of ``image_size`` images."""
    import tensorflow as tf

    return tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32)],
        reduce_retracing=True,
    )


def batched_predict(model, x: np.ndarray | None, batch: int = 256) -> np.ndarray | None:
    """Inference over an array in chunks (bounded memory), as float32 numpy; None for no rows."""
    if x is None or not len(x):
        return None
    out = [np.asarray(model(x[i : i + batch].astype(np.float32), training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(out)


def decode_example(example: Example, size: int, skipped: list[tuple[str, str]]) -> np.ndarray | None:
    """The example's pixels at ``size``, or None after listing it in ``skipped`` with the reason."""
    from classifier.images import ImageDecodeError, decode_image

    try:
        return decode_image(example.source(), size)
    except ImageDecodeError as error:
        skipped.append((example.name, str(error)))
        return None


def decode_all(examples: list[Example], size: int) -> tuple[list[Example], np.ndarray, list[tuple[str, str]]]:
    """``(examples that decode, their pixels stacked, skipped)``: every image in memory at once."""
    kept, pixels, skipped = [], [], []
    for example in examples:
        image = decode_example(example, size, skipped)
        if image is not None:
            pixels.append(image)
            kept.append(example)
    array = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), dtype=np.uint8)
    return kept, array, skipped


def bottleneck_root(cache_dir: str | Path | None, backbone_cache: str | Path | None = None) -> Path:
    """Where the bottleneck cache lives: ``cache_dir``, else ``bottlenecks/`` in the backbone cache directory."""
    from classifier.backbones import backbone_cache_dir

    return Path(cache_dir) if cache_dir is not None else backbone_cache_dir(backbone_cache) / "bottlenecks"


def feature_cache_variant(backbone, hparams: HParams, cut_layer: str | None = None) -> str:
    """The cache namespace suffix of a backbone's features: its weights, feature layers, pooling, and any cut.

    The weights fingerprint comes first, so a loaded model's backbone can be checked against a recorded variant:
    features from other weights must never be mistaken for its own.
    """
    from classifier.backbones import FINAL_FEATURES
    from classifier.model import weights_fingerprint

    feature_layer = hparams.resolved_feature_layer()
    pooling = hparams.resolved_pooling()
    suffix = f"-{feature_layer}" if feature_layer != FINAL_FEATURES else ""
    suffix += f"-{pooling}" if pooling != "average" else ""
    return weights_fingerprint(backbone) + suffix + (f"-{cut_layer}" if cut_layer else "")


def feature_caches(
    root: Path, hparams: HParams, variant: str, mirror: bool
) -> tuple[BottleneckCache, BottleneckCache | None]:
    """The cache of a backbone's features and, when ``mirror``, the cache of its mirror images' features beside it."""
    size = hparams.resolved_image_size()
    cache = BottleneckCache(root, hparams.backbone, size, variant=variant)
    mirrored = BottleneckCache(root, hparams.backbone, size, variant=variant + "-mirror") if mirror else None
    return cache, mirrored


class Embedder:
    """Pooled features for examples: from the cache when present, else decoded and run through the backbone.

    With a ``mirror_cache``, examples named in ``features(mirror=...)`` also get the features of their mirror image
    (flipped left-right), which training uses as an extra example. Both come from one decode, and an image counts
    once in ``embedded`` / ``cached`` however many of its two vectors had to be computed.
    """

    def __init__(
        self,
        backbone,
        image_size: int,
        cache: BottleneckCache | None,
        mirror_cache: BottleneckCache | None = None,
        forward=None,
    ):
        self.backbone = backbone
        self.image_size = image_size
        self.cache = cache
        self.mirror_cache = mirror_cache
        self.embedded = 0
        self.cached = 0
        # Tracing costs far more than embedding one image: callers that embed a few images at a time pass the
        # traced pass they keep (see `_extractor`).
        self._forward = forward or traced_forward(backbone, image_size)

    def features(
        self, examples: list[Example], progress: Progress = no_progress, mirror: frozenset[str] = frozenset()
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[tuple[str, str]]]:
        """``(features by sha, mirror-image features by sha, skipped)`` for ``examples``, reported as "embedding"."""
        found: dict[str, np.ndarray] = {}
        mirrored: dict[str, np.ndarray] = {}
        skipped: list[tuple[str, str]] = []
        pending: list[tuple[str, np.ndarray, dict, BottleneckCache | None]] = []

        def flush():
            if not pending:
                return
            batch = np.stack([pixels for _, pixels, _, _ in pending]).astype(np.float32)
            vectors = np.asarray(self._forward(batch))
            for (sha, _, into, cache), vector in zip(pending, vectors, strict=True):
                into[sha] = vector
                if cache is not None:
                    cache.put(sha, vector)
            pending.clear()

        def lookup(cache: BottleneckCache | None, sha: str) -> np.ndarray | None:
            return cache.get(sha) if cache is not None else None

        for done, example in enumerate(examples, start=1):
            sha = example.sha256
            want_mirror = self.mirror_cache is not None and sha in mirror
            vector = lookup(self.cache, sha)
            flipped = lookup(self.mirror_cache, sha) if want_mirror else None
            if vector is not None:
                found[sha] = vector
            if flipped is not None:
                mirrored[sha] = flipped
            if vector is not None and (flipped is not None or not want_mirror):
                self.cached += 1
            else:
                pixels = decode_example(example, self.image_size, skipped)
                if pixels is None:
                    # An image whose missing vector cannot be computed is dropped whole, cached half included.
                    found.pop(sha, None)
                    mirrored.pop(sha, None)
                else:
                    self.embedded += 1
                    if vector is None:
                        pending.append((sha, pixels, found, self.cache))
                    if want_mirror and flipped is None:
                        pending.append((sha, pixels[:, ::-1], mirrored, self.mirror_cache))
                if len(pending) >= EMBED_BATCH:
                    flush()
            progress("embedding", done, len(examples))
        flush()
        return found, mirrored, skipped


@dataclass(frozen=True)
class EmbedResult:
    """What `embed_examples` did: images run through the backbone, images found cached, images that failed."""

    embedded: int
    cached: int
    skipped: list[tuple[str, str]]
    runtime: str = "keras"


# The frozen backbone a process last embedded with, by what defines its features: building one and hashing its
# weights costs seconds, and a process that embeds images as moderators decide them does so one image at a time.
_EXTRACTORS: dict[tuple, tuple[Any, str, Any]] = {}


def _extractor(hparams: HParams, backbone_cache: str | Path | None) -> tuple[Any, str, Any]:
    """``(backbone, cache variant, traced forward pass)`` for these hyper-parameters, built once per process."""
    from classifier.backbones import backbone_cache_dir, build_backbone

    key = (*feature_key(hparams), str(backbone_cache_dir(backbone_cache)))
    if key not in _EXTRACTORS:
        _EXTRACTORS.clear()
        backbone = build_backbone(
            hparams.backbone,
            image_size=key[1],
            weights=hparams.backbone_weights,
            cache_dir=backbone_cache,
            feature_layer=key[3],
            pooling=key[4],
        )
        _EXTRACTORS[key] = (backbone, feature_cache_variant(backbone, hparams), traced_forward(backbone, key[1]))
    return _EXTRACTORS[key]


def embed_examples(
    examples: Sequence[Example],
    hparams: HParams,
    cache_dir: str | Path | None = None,
    for_training: bool = True,
    progress: Progress | None = None,
    *,
    backbone_cache: str | Path | None = None,
    extractor: FeatureExtractor | None = None,
) -> EmbedResult:
    """Fill the bottleneck cache for ``examples`` now, so that a later ``train_model`` finds them embedded.

    Embedding new images is most of a retrain's time; done as images arrive (one at a time, when a moderator
    decides one), it is off the path between the trigger and the promoted model. With ``for_training`` the mirror
    image of every example that the stable split puts in training is embedded too, as ``train_model`` would;
    holdout images (``for_training=False``) are only ever scored, so they get their own features only.
    Hyper-parameters whose training never reads the cache (distortions, fine-tuning) have nothing to
    precompute: the result then says nothing was embedded. ``cache_dir`` and ``backbone_cache`` mean what they
    mean to ``train_model``, which must get the same ones to find these features. An ``extractor`` (the active
    version's LiteRT backbone) whose key matches these hyper-parameters embeds instead of the Keras backbone, which
    is then never built.
    """
    if hparams.distort or hparams.fine_tune_layers > 0 or not examples:
        return EmbedResult(embedded=0, cached=0, skipped=[])
    if extractor is not None and extractor.key == feature_key(hparams):
        backbone, variant, forward, runtime = None, extractor.variant, extractor.forward, extractor.runtime
    else:
        (backbone, variant, forward), runtime = _extractor(hparams, backbone_cache), "keras"
    mirror = hparams.mirror and for_training
    cache, mirror_cache = feature_caches(bottleneck_root(cache_dir, backbone_cache), hparams, variant, mirror)
    embedder = Embedder(backbone, hparams.resolved_image_size(), cache, mirror_cache, forward)
    to_mirror = frozenset(
        e.sha256
        for e in examples
        if mirror and split_of(e.split_key, hparams.test_share, hparams.validation_share) == "train"
    )
    _, _, skipped = embedder.features(list(examples), progress or no_progress, mirror=to_mirror)
    return EmbedResult(embedded=embedder.embedded, cached=embedder.cached, skipped=skipped, runtime=runtime)
