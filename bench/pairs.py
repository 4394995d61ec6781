"""Fashion-MNIST pairs at the product's defaults, every model choice made by cross-validation: bench/results/pairs.json.

For each pair (prohibited class first), `--per-class` training photos per class (300) train a model with the
defaults (`HParams()`: cross-validated input size, feature layers, pooling and L2, out-of-distribution negatives),
using all of them for training (`test_share=0`: the pair's own test photos are the test set), and the model is
evaluated on every test photo of the pair (1,000 per class, 2,000 in all). The test photos are never seen before
evaluation, so the figure is not chosen on them. Target: Pullover vs Coat >= 0.92 accuracy.

Run: `make bench-pairs` (three pairs, seed 0; about 10 minutes on 2 cores) or, e.g.,
`.venv/bin/python bench/pairs.py --seeds 0 1 2`. A smoke run: `--per-class 20 --test-per-class 20 --pairs
Pullover:Coat`. Numbers are measured, never asserted; every seed is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.harness.report import load_average, log, machine_info, write_json  # noqa: E402
from bench.harness.workload import classifier_environment as environment  # noqa: E402

DEFAULT_PAIRS = ("Pullover:Coat", "Shirt:T-shirt/top", "Sneaker:Ankle boot")
TARGETS = {("Pullover", "Coat"): 0.92}


def parse_pairs(text: list[str]) -> list[tuple[str, str]]:
    """``["Pullover:Coat", ...]`` as ``[("Pullover", "Coat"), ...]``: the prohibited class first."""
    pairs = []
    for item in text:
        prohibited, _, allowed = item.partition(":")
        if not prohibited or not allowed:
            raise SystemExit(f"--pairs takes PROHIBITED:ALLOWED, got {item!r}")
        pairs.append((prohibited.strip(), allowed.strip()))
    return pairs


def run_pair(pair, seed: int, args, work: Path) -> dict:
    """Train one pair at the defaults with ``seed`` and evaluate it on the pair's test photos."""
    from classifier.data import scan_folder
    from classifier.datasets import FOLDER_NAMES, class_index, export_fashion_mnist
    from classifier.evaluation import evaluate_model
    from classifier.hparams import HParams
    from classifier.registry import Registry
    from classifier.training import train_model

    directory = environment().fashion_mnist_dir
    name = "-".join(FOLDER_NAMES[class_index(c)] for c in pair)
    train_dir, test_dir = work / name / "train", work / name / "test"
    if not train_dir.is_dir():
        export_fashion_mnist(train_dir, list(pair), "train", args.per_class, directory=directory)
        export_fashion_mnist(test_dir, list(pair), "test", args.test_per_class, directory=directory)
    train, test = scan_folder(train_dir), scan_folder(test_dir)
    prohibited = FOLDER_NAMES[class_index(pair[0])]
    overrides = {"seed": seed, "test_share": 0.0}
    if args.image_size:
        overrides["image_size"] = args.image_size
    hparams = HParams(**overrides)
    started = time.monotonic()
    result = train_model(
        train.examples,
        train.labels,
        [prohibited],
        hparams,
        cache_dir=args.cache_dir or work / "bottlenecks",
        backbone_cache=environment().backbone_cache,
    )
    train_seconds = time.monotonic() - started
    registry = Registry(work / name / f"models-{seed}")
    version = registry.save(result)
    metrics = evaluate_model(registry.load(version), test.examples, cache_dir=args.cache_dir or work / "bottlenecks")
    return {
        "pair": list(pair),
        "prohibited": prohibited,
        "seed": seed,
        "train_images": len(train.examples),
        "ood_negatives": result.metrics.get("ood_negatives"),
        "test_images": metrics["n"],
        "accuracy": round(metrics["accuracy"], 4),
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "auc": metrics["auc"],
        "confusion_matrix": metrics["confusion_matrix"],
        "image_size": result.image_size,
        "chosen_by_cv": result.chosen_by_cv,
        "hparams": result.hparams.to_dict(),
        "train_seconds": round(train_seconds, 1),
    }


def main() -> None:
    """Run every pair on every seed and write the results with the machine they ran on."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS), metavar="PROHIBITED:ALLOWED")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=None, help="default: every test photo (1,000)")
    parser.add_argument(
        "--image-size", type=int, help="fix the input size (default: chosen by cross-validation, as the product does)"
    )
    parser.add_argument("--cache-dir", type=Path, help="bottleneck cache (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pairs.json")
    args = parser.parse_args()
    from classifier.runtime import configure_threads

    configure_threads(environment().tf_threads)
    pairs = parse_pairs(args.pairs)
    machine = machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="vigia-pairs-") as work:
        for pair in pairs:
            for seed in args.seeds:
                log(f"{pair[0]} vs {pair[1]}, seed {seed}: training on {args.per_class} per class")
                run = run_pair(pair, seed, args, Path(work))
                chosen = (run["chosen_by_cv"] or {}).get("chosen")
                log(f"  accuracy {run['accuracy']:.4f} on {run['test_images']} test photos; chosen {chosen}")
                runs.append(run)
    summary = []
    for pair in pairs:
        accuracies = [run["accuracy"] for run in runs if tuple(run["pair"]) == pair]
        target = TARGETS.get(pair)
        summary.append(
            {
                "pair": list(pair),
                "accuracy_per_seed": accuracies,
                "mean_accuracy": round(statistics.mean(accuracies), 4),
                "target": target,
                "met": None if target is None else all(accuracy >= target for accuracy in accuracies),
            }
        )
    write_json(
        args.out,
        {
            "benchmark": "pairs",
            "per_class": args.per_class,
            "test_per_class": args.test_per_class or "all",
            "seeds": args.seeds,
            "summary": summary,
            "runs": runs,
            "machine": machine,
            "load_average_after": load_average(),
        },
    )
    for row in summary:
        log(f"{row['pair'][0]} vs {row['pair'][1]}: accuracy per seed {row['accuracy_per_seed']}")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
