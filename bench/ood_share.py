"""How much the out-of-distribution negatives should weigh (`HParams.ood_share`), chosen on training data only.

The negatives (`classifier.negatives`) pull blanks, noise and photos of other things to the allowed side; too much
weight takes it from the look-alikes near the boundary. Cross-validation inside a run cannot choose the share (its
folds hold no out-of-distribution photo, so they always prefer less of them), so it is chosen here, once, on data
the test photos never enter:

- each candidate share trains a Pullover vs Coat model on the first `--per-class` Fashion-MNIST *training* photos
  per class, at the product's defaults otherwise (its 10% test split included, which keeps the real photos on the
  test side of their split out of the negatives);
- it is validated on the next `--validation-per-class` *training* photos per class (never the test split), and
  on out-of-distribution photos no training run saw: the installed real photos on the test side of their split
  (`in_test_split`) and synthetic images from another seed than training's;
- the rule: among the shares that leave no validation out-of-distribution photo scored prohibited, the one with the
  best validation accuracy, the larger share on a tie within `--tie` (more weight on what the share is for).

Every seed and share is reported in `bench/results/ood_share.json` with the machine. Run: `make bench-ood-share`
(about 5 minutes on 2 cores) or `.venv/bin/python bench/ood_share.py --seeds 0 1`.
"""

from __future__ import annotations

import argparse
import io
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

PAIR = ("Pullover", "Coat")
VALIDATION_SYNTHETIC_SEED = 12_345


def validation_ood(allowed_label: str, synthetic: int, test_share: float) -> list:
    """Out-of-distribution photos no training run sees, labelled with the allowed label."""
    from classifier.data import Example
    from classifier.hashing import file_sha256
    from classifier.other_photos import in_test_split, real_photos, synthetic_photos

    examples = [
        Example(sha256=file_sha256(photo.path), label=allowed_label, path=photo.path)
        for photo in real_photos()
        if in_test_split(photo, test_share)
    ]
    for photo in synthetic_photos(synthetic, seed=VALIDATION_SYNTHETIC_SEED):
        buffer = io.BytesIO()
        photo.image().save(buffer, format="PNG")
        examples.append(Example.from_bytes(buffer.getvalue(), allowed_label))
    return examples


def run_share(share: float, seed: int, prohibited: str, train, validation, ood, work: Path) -> dict:
    """Train at ``share`` with ``seed`` and measure it on the validation photos and the held-out OOD photos."""
    from classifier.evaluation import evaluate_model
    from classifier.hparams import HParams
    from classifier.registry import Registry
    from classifier.training import train_model

    # The default test share keeps the real photos on the test side of their split out of the negatives: they
    # are the held-out out-of-distribution photos this run is validated on.
    hparams = HParams(seed=seed, ood_share=share)
    started = time.monotonic()
    result = train_model(
        train.examples,
        train.labels,
        [prohibited],
        hparams,
        cache_dir=work / "bottlenecks",
        backbone_cache=environment().backbone_cache,
    )
    seconds = time.monotonic() - started
    registry = Registry(work / f"models-{seed}-{share}")
    loaded = registry.load(registry.save(result))
    measured = evaluate_model(loaded, validation.examples, cache_dir=work / "bottlenecks")
    ood_scores = evaluate_model(
        loaded, [*validation.examples, *ood], keep_outcomes=True, cache_dir=work / "bottlenecks"
    )
    ood_keys = {example.sha256 for example in ood}
    outcomes = ood_scores["outcomes"]
    scores = [score for key, score in zip(outcomes["keys"], outcomes["scores"], strict=True) if key in ood_keys]
    return {
        "share": share,
        "seed": seed,
        "validation_accuracy": round(measured["accuracy"], 4),
        "validation_auc": measured["auc"],
        "ood_images": len(scores),
        "ood_flagged": sum(score >= 0.5 for score in scores),
        "ood_max_score": round(max(scores), 4) if scores else None,
        "ood_negatives": result.metrics.get("ood_negatives"),
        "train_seconds": round(seconds, 1),
    }


def choose(runs: list[dict], tie: float) -> dict:
    """The rule in the module's docstring, over the mean of the seeds."""
    by_share = {}
    for run in runs:
        by_share.setdefault(run["share"], []).append(run)
    summary = [
        {
            "share": share,
            "mean_validation_accuracy": round(statistics.mean(r["validation_accuracy"] for r in group), 4),
            "ood_flagged": sum(r["ood_flagged"] for r in group),
        }
        for share, group in sorted(by_share.items())
    ]
    clean = [row for row in summary if row["ood_flagged"] == 0] or summary
    best = max(row["mean_validation_accuracy"] for row in clean)
    chosen = max(row["share"] for row in clean if row["mean_validation_accuracy"] >= best - tie)
    return {"summary": summary, "chosen": chosen}


def main() -> None:
    """Train every share on every seed, validate on training-split photos, and write the choice."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", nargs="+", type=float, default=[0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--validation-per-class", type=int, default=300)
    parser.add_argument("--validation-synthetic", type=int, default=60)
    parser.add_argument("--tie", type=float, default=0.005, help="accuracy within which shares count as equal")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ood_share.json")
    args = parser.parse_args()
    from classifier.data import scan_folder
    from classifier.datasets import FOLDER_NAMES, class_index, export_fashion_mnist
    from classifier.hparams import HParams
    from classifier.runtime import configure_threads

    configure_threads(environment().tf_threads)
    machine, load_before = machine_info(), load_average()
    directory = environment().fashion_mnist_dir
    runs = []
    with tempfile.TemporaryDirectory(prefix="vigia-ood-share-") as tmp:
        work = Path(tmp)
        export_fashion_mnist(work / "train", list(PAIR), "train", args.per_class, directory=directory)
        export_fashion_mnist(
            work / "validation",
            list(PAIR),
            "train",
            args.validation_per_class,
            directory=directory,
            offset=args.per_class,
        )
        train, validation = scan_folder(work / "train"), scan_folder(work / "validation")
        prohibited, allowed = (FOLDER_NAMES[class_index(name)] for name in PAIR)
        ood = validation_ood(allowed, args.validation_synthetic, HParams().test_share)
        for seed in args.seeds:
            for share in args.shares:
                log(f"seed {seed}, ood_share {share}")
                run = run_share(share, seed, prohibited, train, validation, ood, work)
                log(f"  validation accuracy {run['validation_accuracy']}, OOD flagged {run['ood_flagged']}")
                runs.append(run)
    verdict = choose(runs, args.tie)
    log(f"chosen ood_share {verdict['chosen']}")
    write_json(
        args.out,
        {
            "benchmark": "ood_share",
            "pair": list(PAIR),
            "per_class": args.per_class,
            "validation_per_class": args.validation_per_class,
            "validation": "Fashion-MNIST training photos after the training ones; held-out real and synthetic OOD",
            "runs": runs,
            **verdict,
            "default": HParams().ood_share,
            "load_average_before": load_before,
            "machine": machine,
        },
    )


if __name__ == "__main__":
    main()
