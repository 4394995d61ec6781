"""Measure the classifier from outside, like a user would, and write bench/results/classifier.json.

Keras against LiteRT on the same saved model (bare and through the Scorer, at each batch size, in alternating
rounds), their equivalence on test photos, one LiteRT process with every thread against one per core, decode
cost, cold vs warm retraining, peak memory.

Run: `.venv/bin/python bench/classifier.py` (full: retrains on 2,000 and 10,000 images, ~half an hour on 2 cores)
or `.venv/bin/python bench/classifier.py --quick` (a few minutes). Numbers are measured, never asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.harness.report import machine_info  # noqa: E402
from bench.harness.workload import classifier_environment as environment  # noqa: E402


def machine() -> dict:
    """The machine and the TensorFlow build and threads, recorded with every result so figures keep their context."""
    import keras
    import tensorflow as tf

    return {
        **machine_info(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_threads": os.environ.get("VIGIA_TF_THREADS") or "default",
    }


def sample_images(count: int, size: int = 28) -> list[np.ndarray]:
    """The first `count` Fashion-MNIST test photos as arrays: real inputs rather than synthetic ones."""
    from classifier.datasets import load_fashion_mnist

    images, _ = load_fashion_mnist("test", environment().fashion_mnist_dir)
    return [np.asarray(images[i]) for i in range(count)]


def decode_cost(size: int, repeats: int) -> dict:
    """Milliseconds to decode one upload into model input: a 1600x1200 JPEG photo and a 28 px PNG."""
    from PIL import Image
    from skimage import data

    from classifier.images import decode_image

    photo = Image.fromarray(data.astronaut()).resize((1600, 1200))
    jpeg = io.BytesIO()
    photo.save(jpeg, format="JPEG", quality=90)
    png = io.BytesIO()
    Image.fromarray(sample_images(1)[0]).save(png, format="PNG")
    result = {}
    for name, payload in (("jpeg_1600x1200", jpeg.getvalue()), ("png_28x28", png.getvalue())):
        decode_image(payload, size)
        started = time.perf_counter()
        for _ in range(repeats):
            decode_image(payload, size)
        result[name] = round((time.perf_counter() - started) * 1000 / repeats, 3)
    return result


def saved_version(size: int, backbone: str, root: Path) -> str:
    """Save the product's default model with an untrained head as the active version of a registry at ``root``."""
    from classifier.backbones import accepts_weights_file, build_backbone
    from classifier.hparams import HParams
    from classifier.model import build_classifier, build_head
    from classifier.registry import Registry
    from classifier.training import TrainingResult

    settings = environment()
    weights = settings.backbone_weights if accepts_weights_file(backbone) else None
    hparams = HParams(backbone=backbone, image_size=size, backbone_weights=weights)
    # The product's default model: the default feature layers and pooling on this backbone, with the head.
    net = build_backbone(
        backbone,
        size,
        weights=hparams.backbone_weights,
        cache_dir=settings.backbone_cache,
        feature_layer=hparams.resolved_feature_layer(),
        pooling=hparams.resolved_pooling(),
    )
    model = build_classifier(net, build_head(int(net.output_shape[-1]), 2, hparams), size)
    result = TrainingResult(
        model=model,
        labels=["allowed", "prohibited"],
        prohibited=["prohibited"],
        hparams=hparams,
        history={},
        metrics={},
        manifest={},
        embedded=0,
        cached=0,
        skipped=[],
        seconds=0.0,
        image_size=size,
    )
    registry = Registry(root)
    version = registry.save(result)
    registry.activate(version)
    return version


def throughput(size: int, batches: list[int], seconds: float, rounds: int, backbone: str, threads: int) -> dict:
    """Images/s of Keras and LiteRT on one saved model, bare and through the Scorer, rounds interleaved.

    "bare" is the eager Keras call `model(x, training=False)`; "traced" the same call inside one tf.function,
    Keras' fastest forward pass and how the Scorer runs Keras; "litert" the version's checked LiteRT file with
    ``threads`` threads. The Scorer figures ("scorer_*", decoded arrays in) add its decode and copy cost.
    """
    from bench.harness.runtimes import alternating, served_forwards
    from classifier.scoring import Scorer

    root = Path(tempfile.mkdtemp(prefix="vigia-bench-registry-"))
    version = saved_version(size, backbone, root)
    served = served_forwards(root, version, threads)
    scorers = {runtime: Scorer(root, runtime=runtime, threads=threads) for runtime in ("keras", "litert")}
    from classifier.registry import Registry

    bare = Registry(root).load(version).model
    rng = np.random.default_rng(0)
    figures: dict[str, dict[str, float]] = {}
    for batch in batches:
        arrays = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
        stacked = np.stack(arrays).astype(np.float32)
        calls = {
            "scorer_keras": lambda arrays=arrays: scorers["keras"].predict(arrays),
            "scorer_litert": lambda arrays=arrays: scorers["litert"].predict(arrays),
            "bare": lambda stacked=stacked: bare(stacked, training=False),
            "traced": lambda stacked=stacked: served["keras"].forward(stacked),
            "litert": lambda stacked=stacked: served["litert"].forward(stacked),
        }
        for name, rate in alternating(calls, batch, seconds, rounds).items():
            figures.setdefault(name, {})[str(batch)] = rate
    shutil.rmtree(root, ignore_errors=True)
    return figures


def equivalence_run(size: int, train_per_class: int, images: int) -> dict:
    """Keras against LiteRT on a model trained like the default one (Pullover vs Coat), over test photos.

    The report has the largest and mean probability difference and how many photos keep their top label and
    their routing (flagged or cleared at 0.5) under LiteRT.
    """
    from bench.harness.runtimes import equivalence, served_forwards
    from bench.harness.workload import ClassPair, class_examples
    from classifier.hparams import HParams
    from classifier.registry import Registry
    from classifier.training import train_model

    settings = environment()
    pair = ClassPair.parse("Pullover,Coat")
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-equivalence-"))
    train = class_examples(pair, "train", train_per_class)
    hparams = HParams(image_size=size)
    result = train_model(
        train,
        list(pair.labels),
        [pair.prohibited],
        hparams,
        cache_dir=work / "cache",
        backbone_cache=settings.backbone_cache,
    )
    registry = Registry(work / "models")
    version = registry.save(result)
    served = served_forwards(work / "models", version, threads=None)
    photos = [example.data for example in class_examples(pair, "test", images // 2)]
    report = {**equivalence(served, photos), "saved_check": registry.litert(version).get("scoring")}
    shutil.rmtree(work, ignore_errors=True)
    return report


def layout_run(size: int, backbone: str, seconds: float, rounds: int, images: int) -> dict:
    """Images/s of one LiteRT process with every core's thread against one single-thread process per core."""
    from bench.harness.runtimes import layouts
    from bench.harness.workload import jpeg_photos

    root = Path(tempfile.mkdtemp(prefix="vigia-bench-layout-"))
    version = saved_version(size, backbone, root)
    figures = layouts(root / version / "model.tflite", jpeg_photos("test", images), size, seconds, rounds)
    shutil.rmtree(root, ignore_errors=True)
    return figures


def retrain_times(counts: list[int], hparams) -> tuple[dict, dict, dict]:
    """Cold retrain (empty cache) vs warm retrain (cache missing 10% of the images) on Fashion-MNIST photos."""
    from classifier.data import scan_folder
    from classifier.datasets import export_fashion_mnist
    from classifier.training import train_model

    settings = environment()
    cold, warm, details = {}, {}, {}
    for count in counts:
        work = Path(tempfile.mkdtemp(prefix="vigia-bench-retrain-"))
        export_fashion_mnist(
            work / "data", ["Pullover", "Coat"], "train", per_class=count // 2, directory=settings.fashion_mnist_dir
        )
        scan = scan_folder(work / "data")
        options = {"cache_dir": work / "cache", "backbone_cache": settings.backbone_cache}
        started = time.perf_counter()
        first = train_model(scan.examples, scan.labels, ["Coat"], hparams, **options)
        cold[str(count)] = round(time.perf_counter() - started, 2)
        # Forget 10% of the images: every cached vector of theirs (features and mirror features), so those images
        # are "new" to the warm retrain and the others are fully cached.
        cached_files = list((work / "cache").rglob("*.npy"))
        forgotten = set(sorted({path.stem for path in cached_files})[::10])
        for path in cached_files:
            if path.stem in forgotten:
                path.unlink()
        started = time.perf_counter()
        second = train_model(scan.examples, scan.labels, ["Coat"], hparams, **options)
        warm[str(count)] = round(time.perf_counter() - started, 2)
        details[str(count)] = {
            "images": len(scan.examples),
            "cold_embedded": first.embedded,
            "warm_embedded": second.embedded,
            "warm_cached": second.cached,
            "warm_over_cold": round(warm[str(count)] / cold[str(count)], 3),
            "cold_test_accuracy": first.metrics["accuracy"],
            "epochs_cold": len(first.history.get("loss", [])),
            "epochs_warm": len(second.history.get("loss", [])),
        }
        shutil.rmtree(work, ignore_errors=True)
    return cold, warm, details


def main() -> int:
    """Run each measurement, write the results file atomically and print the report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: retrain 200 and 1000 images")
    parser.add_argument("--retrain-sizes", default=None, help="comma-separated image counts (default 2000,10000)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=None, help="time per throughput measurement")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--skip-retrain", action="store_true")
    parser.add_argument("--equivalence-images", type=int, default=2000, help="test photos (0: skip the check)")
    parser.add_argument("--equivalence-train-per-class", type=int, default=300)
    parser.add_argument("--layout-seconds", type=float, default=None, help="per layout and round (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "classifier.json")
    args = parser.parse_args()

    from classifier.backbones import accepts_weights_file
    from classifier.hparams import HParams
    from classifier.runtime import configure_threads

    # This process owns TensorFlow: it sets the threads once, as `python -m classifier` does.
    configure_threads(environment().tf_threads)

    defaults = HParams()
    overrides = {}
    if args.backbone:
        overrides["backbone"] = args.backbone
    if args.image_size:
        overrides["image_size"] = args.image_size
    weights = environment().backbone_weights
    if weights and accepts_weights_file(overrides.get("backbone", defaults.backbone)):
        overrides["backbone_weights"] = weights
    hparams = HParams(**{**defaults.to_dict(), **overrides})
    size = hparams.resolved_image_size()
    counts = [int(x) for x in (args.retrain_sizes or ("200,1000" if args.quick else "2000,10000")).split(",")]
    seconds = args.seconds or (3.0 if args.quick else 12.0)
    batches = [int(x) for x in args.batches.split(",")]

    report = {"machine": machine(), "backbone": hparams.backbone, "image_size": size, "quick": args.quick}
    print(f"decode ({size} px)...", file=sys.stderr)
    decode = decode_cost(size, repeats=20 if args.quick else 100)
    report["decode_ms_per_image"] = decode["jpeg_1600x1200"]
    report["decode_ms_detail"] = decode
    print("throughput, Keras and LiteRT...", file=sys.stderr)
    threads = environment().tf_threads or os.cpu_count()
    figures = throughput(size, batches, seconds, rounds=3, backbone=hparams.backbone, threads=threads)
    embed, bare, traced, litert = (figures[name] for name in ("scorer_keras", "bare", "traced", "litert"))
    report.update(embed_img_per_s=embed, bare_img_per_s=bare, bare_traced_img_per_s=traced)
    report["embed_over_bare"] = {b: round(embed[b] / bare[b], 3) for b in embed}
    report["embed_over_bare_traced"] = {b: round(embed[b] / traced[b], 3) for b in embed}
    report["keras_img_per_s"], report["litert_img_per_s"], report["litert_threads"] = traced, litert, threads
    report["litert_over_keras"] = {b: round(litert[b] / traced[b], 3) for b in litert}
    report["scorer_img_per_s"] = {"keras": embed, "litert": figures["scorer_litert"]}
    if args.equivalence_images:
        print(f"equivalence on {args.equivalence_images} test photos...", file=sys.stderr)
        report["equivalence"] = equivalence_run(size, args.equivalence_train_per_class, args.equivalence_images)
    layout_seconds = (3.0 if args.quick else 10.0) if args.layout_seconds is None else args.layout_seconds
    if layout_seconds:
        print("worker layouts...", file=sys.stderr)
        report["layout_img_per_s"] = layout_run(size, hparams.backbone, layout_seconds, rounds=3, images=256)
    if not args.skip_retrain:
        print(f"retrain {counts}...", file=sys.stderr)
        cold, warm, details = retrain_times(counts, hparams)
        report.update(cold_retrain_s=cold, warm_retrain_s=warm, retrain_detail=details)
        report["retrain_hparams"] = hparams.to_dict()
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
