"""Keras and LiteRT side by side on one saved version, in one process run, as `bench/classifier.py` and
`bench/pipeline.py` report them: throughput per batch size, decode plus forward, equivalence and worker layouts.

Figures from a shared machine swing with whatever else runs, so the two runtimes are always measured in the same
run, in alternating rounds, and compared by their ratio; absolute figures are only worth quoting from a quiet
machine. Both forward passes come from the registry exactly as a scoring process gets them
(`classifier.serving.load_served`), so the LiteRT figures are those of the file that passed its check.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from pathlib import Path

RUNTIMES = ("keras", "litert")


def served_forwards(registry_root: Path, version: str, threads: int | None) -> dict:
    """``{"keras": ServedModel, "litert": ServedModel}`` of one version; SystemExit if it has no LiteRT file."""
    from classifier.registry import Registry
    from classifier.serving import load_served

    registry = Registry(registry_root)
    served = {runtime: load_served(registry, version, runtime, threads) for runtime in RUNTIMES}
    if served["litert"].runtime != "litert":
        raise SystemExit(f"{version} has no usable LiteRT file: {served['litert'].note}")
    return served


def alternating(calls: dict, batch: int, seconds: float, rounds: int) -> dict[str, float]:
    """Median images/s of each ``calls[name]()`` (one call scores ``batch`` images), rounds interleaved."""
    for call in calls.values():
        call()
    runs: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / rounds:
                call()
                count += batch
            runs[name].append(count / (time.perf_counter() - started))
    return {name: round(statistics.median(values), 2) for name, values in runs.items()}


def decode_and_forward(forward, photos: list[bytes], size: int, batch: int = 32) -> dict:
    """Images/s of decoding ``photos`` and running them through ``forward`` in batches, and of the forward alone."""
    import numpy as np

    from classifier.images import decode_image

    forward(np.zeros((batch, size, size, 3), dtype=np.float32))  # allocate (or trace) outside the timing
    forward_seconds = 0.0
    started = time.perf_counter()
    for start in range(0, len(photos), batch):
        pixels = np.stack([decode_image(data, size) for data in photos[start : start + batch]]).astype(np.float32)
        tick = time.perf_counter()
        np.asarray(forward(pixels))
        forward_seconds += time.perf_counter() - tick
    total = time.perf_counter() - started
    return {
        "img_per_s": round(len(photos) / total, 2),
        "forward_only_img_per_s": round(len(photos) / forward_seconds, 2),
    }


def equivalence(served: dict, photos: list[bytes], threshold: float = 0.5, batch: int = 32) -> dict:
    """How the two runtimes' probabilities differ on ``photos``, and whether every photo is routed the same.

    Routing is the platform's decision: flagged when the prohibited labels' highest probability reaches
    ``threshold``, cleared otherwise.
    """
    import numpy as np

    from classifier.images import decode_image

    keras, litert = served["keras"], served["litert"]
    prohibited = [keras.labels.index(label) for label in keras.prohibited]
    outputs: dict[str, list] = {runtime: [] for runtime in RUNTIMES}
    for start in range(0, len(photos), batch):
        pixels = np.stack([decode_image(data, keras.image_size) for data in photos[start : start + batch]])
        for runtime, model in (("keras", keras), ("litert", litert)):
            outputs[runtime].append(np.asarray(model.forward(pixels.astype(np.float32)), dtype=np.float64))
    a, b = (np.concatenate(outputs[runtime]) for runtime in RUNTIMES)
    flagged_a = a[:, prohibited].max(axis=1) >= threshold
    flagged_b = b[:, prohibited].max(axis=1) >= threshold
    return {
        "images": len(a),
        "max_abs_diff": float(np.abs(a - b).max()),
        "mean_abs_diff": float(np.abs(a - b).mean()),
        "argmax_agree": int((a.argmax(axis=1) == b.argmax(axis=1)).sum()),
        "routing_agree": int((flagged_a == flagged_b).sum()),
        "routing_all_same": bool((flagged_a == flagged_b).all()),
        "flagged": int(flagged_a.sum()),
        "threshold": threshold,
    }


def _layout_child(path: str, threads: int, photos: list[bytes], size: int, batch: int, seconds: float, barrier, out):
    """One scoring process of a layout: decode and score ``photos`` round and round for ``seconds``."""
    import numpy as np

    from classifier.images import decode_image
    from classifier.litert import LiteRTModel

    model = LiteRTModel(Path(path).read_bytes(), threads)
    model(np.zeros((batch, size, size, 3), dtype=np.float32))
    barrier.wait()
    count, index, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = [photos[(index + i) % len(photos)] for i in range(batch)]
        index += batch
        model(np.stack([decode_image(data, size) for data in chunk]).astype(np.float32))
        count += batch
    out.put(count / (time.perf_counter() - started))


def layouts(litert_file: Path, photos: list[bytes], size: int, seconds: float, rounds: int, batch: int = 32) -> dict:
    """Images/s of the machine's cores as one process with all threads ("1x2") or one process per core ("2x1").

    Each process decodes and scores batches the way a scoring child does, LiteRT only (no TensorFlow), all
    started together; the layouts alternate round by round and the median of each is reported.
    """
    cores = os.cpu_count() or 1
    shapes = {f"1x{cores}": (1, cores), f"{cores}x1": (cores, 1)}
    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(rounds):
        for name, (processes, threads) in shapes.items():
            barrier, out = context.Barrier(processes), context.Queue()
            children = [
                context.Process(
                    target=_layout_child, args=(str(litert_file), threads, photos, size, batch, seconds, barrier, out)
                )
                for _ in range(processes)
            ]
            for child in children:
                child.start()
            rates = [out.get(timeout=seconds + 120) for _ in children]
            for child in children:
                child.join()
            runs[name].append(sum(rates))
    return {name: round(statistics.median(values), 2) for name, values in runs.items()}
