"""Retrain cost at scale: 10,000 examples of which 1,000 are new, evaluation and gate included.

Issue 4's target: such a retrain finishes in <= 60 s on this machine. The run is the platform's own
(`execute_training_run` on a real PostgreSQL database, the product's classifier defaults, the feature cache
and the registry), so it includes reading the examples, embedding the new images, training the head, evaluating
on the test split, saving the version and scoring candidate and active model on the weighted holdout.

Set-up, not timed: Fashion-MNIST photos (first class prohibited) are imported as the initial set and a first
model is trained on them (a cold run embeds every image once; the feature cache under --work survives reruns).
Then the new examples arrive as decisions, a tenth of them audit items weighted 1 / audit rate. As on the
platform, each decision's image is embedded on the training queue when it is decided (`embed_decision_examples`,
one decision per call, timed separately: that time is spent while moderators work); `--no-embed-ahead` skips it
and leaves all the embedding to the retrain. Then the timed retrain runs. The new images' cached features are
deleted first, so a rerun measures the same work. Writes bench/results/retrain.json (or `--result-name`).

Embedding runs on the first model's LiteRT feature extractor, as on the platform (`--runtime keras` embeds with
the Keras backbone instead), and saving the candidate includes converting it to LiteRT and checking the file
against Keras; the results say which runtime embedded and what the conversion cost.
"""

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness.report import load_average, log, machine_info, write_json  # noqa: E402
from bench.harness.stack import start_from_nothing  # noqa: E402
from bench.harness.workload import ClassPair, fashion_mnist, png_bytes  # noqa: E402


def parse_args():
    """The command line: classes, sizes, audit rate, embedding ahead, state and output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="Pullover,Coat")
    parser.add_argument("--total", type=int, default=10_000, help="training examples in the timed retrain")
    parser.add_argument("--new", type=int, default=1_000, help="of which new since the previous run")
    parser.add_argument("--holdout-per-class", type=int, default=100)
    parser.add_argument("--audit-rate", type=float, default=0.1)
    parser.add_argument(
        "--embed-ahead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="embed each new decision's image as it is decided, as the platform does (default), before the retrain",
    )
    parser.add_argument(
        "--runtime", choices=("litert", "keras"), default="litert", help="VIGIA_RUNTIME: what embeds new images"
    )
    parser.add_argument("--result-name", default="retrain.json")
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench-retrain")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_RETRAIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vigia_bench_retrain"),
    )
    return parser.parse_args()


def forget_cached(cache_root: Path, shas: set[str]) -> int:
    """Delete these images' vectors from every cache namespace, so they count as new again."""
    removed = 0
    for namespace in cache_root.glob("*") if cache_root.is_dir() else []:
        for sha in shas:
            path = namespace / sha[:2] / f"{sha}.npy"
            if path.exists():
                path.unlink()
                removed += 1
    return removed


def main() -> int:
    """Set up the examples and the first model (not timed), then time one retrain and write the results file."""
    args = parse_args()
    machine = machine_info()
    pair = ClassPair.parse(args.classes)
    work = args.work.resolve()
    (work / "images").mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # The database starts from nothing, so the registry does too; the feature cache under --work survives reruns.
    if (work / "models").exists():
        shutil.rmtree(work / "models")
    start_from_nothing(work, args.database_url, VIGIA_RUNTIME=args.runtime)

    from moderation.models import ExampleSource, TrainingExample, TrainingRunStatus, TrainingTrigger
    from moderation.selectors.settings import get_settings
    from moderation.services.model_versions import get_registry
    from moderation.services.training.embedding import embed_decision_examples
    from moderation.services.training.runs import execute_training_run
    from moderation.services.training.trigger import request_training

    settings_row = get_settings()
    settings_row.thresholds = {pair.prohibited: 0.5}
    settings_row.default_threshold = 0.5
    settings_row.audit_rate = args.audit_rate
    settings_row.gate_min_holdout_per_label = 10
    settings_row.save()

    # Photos: both classes interleaved, so the old and the new examples each hold both.
    x_train, y_train = fashion_mnist("train")
    per_class = (args.total + 1) // 2 + args.holdout_per_class
    rows = {label: pair.rows(y_train, label)[:per_class] for label in pair.labels}
    photos = []
    for i in range(per_class):
        for label in pair.labels:
            if i < len(rows[label]):
                data = png_bytes(x_train[rows[label][i]])
                sha = hashlib.sha256(data).hexdigest()
                path = work / "images" / f"{sha}.png"
                if not path.exists():
                    path.write_bytes(data)
                photos.append((sha, str(path), label))
    holdout, pool = [], []
    for photo in photos:
        wanted = sum(1 for item in holdout if item[2] == photo[2]) < args.holdout_per_class
        (holdout if wanted else pool).append(photo)
    pool = pool[: args.total]
    old, new = pool[: args.total - args.new], pool[args.total - args.new :]
    TrainingExample.objects.bulk_create(
        [TrainingExample(sha256=s, path=p, label=label, source=ExampleSource.INITIAL) for s, p, label in old]
    )

    def decision_examples(photos_decided: list, is_holdout: bool) -> list:
        """Decision examples; every tenth an audit item, weighted 1 / audit rate like the platform's own."""
        return [
            TrainingExample(
                sha256=s,
                path=p,
                label=label,
                source=ExampleSource.DECISION,
                is_holdout=is_holdout,
                weight=1 / args.audit_rate if i % 10 == 0 else 1.0,
            )
            for i, (s, p, label) in enumerate(photos_decided)
        ]

    TrainingExample.objects.bulk_create(decision_examples(holdout, is_holdout=True))
    log(f"{len(old)} initial examples, {len(holdout)} holdout decisions; training the first model (not timed)")
    first = execute_training_run(run_id=request_training(trigger=TrainingTrigger.INITIAL, dispatch=False).pk)
    if first.status != TrainingRunStatus.SUCCEEDED:
        raise SystemExit(f"the first run ended {first.status}: {first.reason}")
    log(f"first model {first.model_version}: embedded {first.metrics.get('embedded')}, {first.metrics['seconds']} s")

    created = TrainingExample.objects.bulk_create(decision_examples(new, is_holdout=False))
    new_shas = {example.sha256 for example in created}
    forgotten = forget_cached(work / "feature-cache", new_shas)
    log(f"{len(new)} new decisions; removed {forgotten} cached vectors of their images from earlier runs")
    embed_seconds = None
    if args.embed_ahead:
        ids = list(TrainingExample.objects.filter(sha256__in=new_shas).order_by("id").values_list("id", flat=True))
        embed_started = time.monotonic()
        for example_id in ids:
            embed_decision_examples(example_ids=[example_id])
        embed_seconds = time.monotonic() - embed_started
        log(f"embedded as decided: {embed_seconds:.1f} s for {len(ids)} decisions (not part of the retrain)")
    started = time.monotonic()
    run = execute_training_run(run_id=request_training(trigger=TrainingTrigger.MANUAL, dispatch=False).pk)
    seconds = time.monotonic() - started
    train_seconds = float(run.metrics.get("seconds", 0.0))
    litert = get_registry().litert(run.model_version) if run.model_version else {}
    result = {
        "total_examples": run.total_examples,
        "new_examples": run.new_examples,
        "holdout": len(holdout),
        "status": run.status,
        "reason": run.reason,
        "seconds": round(seconds, 1),
        "train_model_seconds": round(train_seconds, 1),
        # Of which the cross-validated model choice (features, L2 and input size on the training folds).
        "cross_validation_seconds": (run.metrics.get("chosen_by_cv") or {}).get("seconds"),
        "chosen_by_cv": (run.metrics.get("chosen_by_cv") or {}).get("chosen"),
        "save_and_gate_seconds": round(seconds - train_seconds, 1),
        "embedded_ahead": args.embed_ahead,
        "embed_ahead_seconds": round(embed_seconds, 1) if embed_seconds is not None else None,
        "embed_ahead_ms_per_decision": round(1000 * embed_seconds / len(new), 1) if embed_seconds else None,
        "gate_embedded": run.gate.get("embedded"),
        "embedded": run.metrics.get("embedded"),
        "embedding_runtime": run.metrics.get("embedding_runtime"),
        "litert_conversion_seconds": {part: record.get("seconds") for part, record in litert.items()},
        "litert_ok": {part: record.get("ok") for part, record in litert.items()},
        "cached": run.metrics.get("cached"),
        "test_accuracy": run.metrics.get("accuracy"),
        "target_seconds": 60,
        "met": seconds <= 60,
        "machine": machine,
        "load_average_after": load_average(),
        "hparams": get_registry().hparams(run.model_version).to_dict(),
    }
    write_json(args.out / args.result_name, result)
    log(
        f"retrain of {run.total_examples} examples ({run.new_examples} new): {seconds:.1f} s "
        f"(train_model {train_seconds:.1f} s, embedded {result['embedded']} with {result['embedding_runtime']}); "
        f"{run.status}: {run.reason}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
