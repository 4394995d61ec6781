"""Learning-loop simulation: does the desk get better as moderators work? (`make bench-loop CLASSES=Pullover,Coat`)

A labelled Fashion-MNIST stream (the first class prohibited, the second allowed) is posted through the real API
to a real web server; a real Celery scoring worker scores it and a real training worker retrains. A simulated
moderator works the review queue with the true labels through the review services (the same calls the review
pages make). The first model is trained on 20 images per class; every 100 confirmations trigger a retrain, which
the gate promotes or rejects. After each retrain the active model and the never-retrained first model are scored
on a frozen test set (Fashion-MNIST's test split, never streamed) at the threshold: precision and recall of what
would go to the queue.

Writes bench/results/loop.json ({"rounds": [...]}) and bench/results/loop.png.
"""

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness.report import log, machine_info, plot_loop_rounds, rollout_report, write_json  # noqa: E402
from bench.harness.stack import Services, api_token, celery_worker, start_from_nothing  # noqa: E402
from bench.harness.workload import ClassPair, class_examples, fashion_mnist, post_listing, product_photo  # noqa: E402

PYTHON = Path(sys.executable)


def parse_args():
    """The command line: classes, sizes, retrains, gate and audit settings, backbone, state and output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default=os.environ.get("CLASSES", "Pullover,Coat"))
    parser.add_argument("--initial-per-class", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--retrains", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=100, help="images posted between two looks at the queue")
    parser.add_argument("--stream-per-class", type=int, default=1500)
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--backbone", default=os.environ.get("VIGIA_BACKBONE", "mobilenet_v1"))
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's native size")
    parser.add_argument("--min-holdout", type=int, default=10, help="gate_min_holdout_per_label")
    parser.add_argument("--audit-rate", type=float, default=0.1, help="share of below-threshold images reviewed")
    parser.add_argument(
        "--audit-sampling",
        choices=("by_score", "uniform"),
        default="by_score",
        help="how the audit sample is drawn (ModerationSettings.audit_sampling)",
    )
    parser.add_argument(
        "--retrain-hparams",
        default="{}",
        help="JSON hyper-parameters for retrains (VIGIA_TRAINING_HPARAMS), on top of the image size and the "
        "classifier's defaults",
    )
    parser.add_argument("--reupload-share", type=float, default=0.2, help="share of transformed re-uploads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench-loop")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_LOOP_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vigia_bench_loop"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--timeout", type=float, default=3600)
    return parser.parse_args()


def clean_work_dir(work: Path) -> Path:
    """Empty the work directory but for the feature and backbone caches, which survive reruns."""
    work = work.resolve()
    if work.exists():
        for child in work.iterdir():
            if child.name not in {"feature-cache", "backbone-cache"}:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    work.mkdir(parents=True, exist_ok=True)
    return work


def train_first_model(args, pair: ClassPair, work: Path, env: dict) -> tuple[Path, str]:
    """Export `--initial-per-class` photos per class and train the first model with the classifier's command line.

    Returns the exported directory (imported as the initial training set afterwards) and the model's version.
    """
    initial = work / "initial"
    subprocess.run(
        [str(PYTHON), "-m", "classifier", "export-fashion-mnist", "--out", str(initial), "--classes",
         ",".join(pair.labels), "--split", "train", "--per-class", str(args.initial_per_class)],
        check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    trained = subprocess.run(
        [str(PYTHON), "-m", "classifier", "train", "--data", str(initial), "--registry", str(work / "models"),
         "--prohibited", pair.prohibited, "--backbone", args.backbone,
         "--cache-dir", str(work / "feature-cache"), "--seed", str(args.seed), "--activate", "--no-progress"]
        + (["--image-size", str(args.image_size)] if args.image_size else []),
        check=True, env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    return initial, json.loads(trained.stdout.strip().splitlines()[-1])["version"]


def configure_desk(args, pair: ClassPair, initial: Path):
    """Mirror the registry, import the initial set, apply the run's settings; returns the moderator and API token."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from moderation import permissions
    from moderation.selectors.settings import get_settings

    call_command("sync_models", verbosity=0)
    call_command("import_training_set", str(initial), verbosity=0)
    settings_row = get_settings()
    settings_row.default_threshold = args.threshold
    settings_row.thresholds = {pair.prohibited: args.threshold}
    # Pinned: recalibration after each promotion keeps the benchmark's one threshold and no auto-action, so the
    # rounds stay comparable with the runs recorded before the two thresholds existed.
    settings_row.pinned_labels = [pair.prohibited]
    settings_row.retrain_batch_size = args.batch_size
    settings_row.gate_min_holdout_per_label = args.min_holdout
    settings_row.audit_rate = args.audit_rate
    settings_row.audit_sampling = args.audit_sampling
    settings_row.retrain_on_schedule = False
    settings_row.save()
    moderators, _ = permissions.ensure_groups()
    moderator = get_user_model().objects.create_user("loop-moderator", password="unused-loop-password")
    moderator.groups.add(moderators)
    return moderator, api_token("loop-marketplace")


def start_services(services: Services) -> None:
    """The web server, a scoring worker and a training worker (one child each), up and ready."""
    services.start_web(2, "--timeout", "120")
    services.start("scoring-worker", celery_worker("scoring,default", 1, "loop-scoring@%h", "info"))
    services.start("training-worker", celery_worker("training", 1, "loop-training@%h", "info"))
    services.wait_healthy(60, statuses=(200, 503), interval=0.3)
    for name in ("scoring-worker", "training-worker"):
        services[name].wait_for_line(" ready.", 90)
    log(f"web server on {services.base}, scoring and training workers ready")
    return services


def photo_stream(args, pair: ClassPair, labels) -> list[tuple[int, str, str]]:
    """Train-split rows after the initial ones, both classes shuffled together: (dataset row, true label, how it
    was transformed). A `--reupload-share` of the stream re-uploads an earlier photo, transformed as a seller
    would (`bench.harness.photos.TRANSFORMS`); the rest are new photos ("")."""
    from bench.harness.photos import TRANSFORMS

    stream = []
    for label in pair.labels:
        rows = pair.rows(labels, label)[args.initial_per_class : args.initial_per_class + args.stream_per_class]
        stream += [(row, label, "") for row in rows]
    random.Random(args.seed).shuffle(stream)
    rng = random.Random(args.seed + 1)
    for position in range(1, len(stream)):
        if rng.random() < args.reupload_share:
            row, label, _ = stream[rng.randrange(position)]
            stream[position] = (row, label, rng.choice(sorted(TRANSFORMS)))
    return stream


class Simulation:
    """The desk under a simulated moderator: photos streamed in, the queue worked by true labels, rounds recorded."""

    def __init__(self, args, pair: ClassPair, services: Services, token: str, moderator, first_version: str, work):
        import requests

        from classifier.registry import Registry

        self.args, self.pair, self.services, self.token, self.moderator = args, pair, services, token, moderator
        self.x_train, y_train = fashion_mnist("train")
        self.stream = photo_stream(args, pair, y_train)
        # The frozen test set: the test split, never streamed and never trained on.
        self.test_set = class_examples(pair, "test", args.test_per_class)
        self.registry = Registry(work / "models")
        self.session = requests.Session()
        self.truth: dict[str, str] = {}
        self.evaluated: dict[str, dict] = {}
        self.rounds: list[dict] = []
        self.streamed = 0
        self.static = self.evaluate(first_version)

    def evaluate(self, version: str) -> dict:
        """A version's figures on the frozen test set at the threshold (each version evaluated once)."""
        from classifier.evaluation import evaluate_model

        if version not in self.evaluated:
            model = self.registry.load(version)
            self.evaluated[version] = evaluate_model(model, self.test_set, threshold=self.args.threshold)
        return self.evaluated[version]

    def post(self, index: int, row: int, label: str, transform: str = "") -> int:
        """Post stream photo `row` (transformed if it is a re-upload) as listing `loop-{index}`; its listing's ID."""
        external_id = f"loop-{index}"
        self.truth[external_id] = label
        photo = product_photo(self.x_train[row])
        if transform:
            from PIL import Image

            from bench.harness.photos import TRANSFORMS, jpeg

            photo = jpeg(TRANSFORMS[transform](Image.open(io.BytesIO(photo))))
        _, body = post_listing(
            self.session, self.services.base, self.token, external_id, [photo], title=f"listing {index}", timeout=60
        )
        return body["id"]

    def work_queue(self) -> int:
        """The simulated moderator: claim the next item, decide it by its true label, until the queue is empty."""
        from moderation.services import review

        decided = 0
        while True:
            image = review.claim_next(user=self.moderator)
            if image is None:
                return decided
            outcome = "confirm" if self.truth[image.listing.external_id] == self.pair.prohibited else "reject"
            review.decide(user=self.moderator, image_id=image.pk, outcome=outcome)
            decided += 1

    def settled(self) -> bool:
        """Nothing waits for a score, and every flagged image was scored by the active model."""
        from moderation.models import ImageStatus, ListingImage, ModelVersion

        active = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
        open_images = ListingImage.objects.filter(status__in=[ImageStatus.PENDING, ImageStatus.FLAGGED])
        return (
            not open_images.filter(status=ImageStatus.PENDING).exists()
            and not open_images.exclude(model_version=active).exists()
        )

    def record(self, round_number: int, run=None) -> None:
        """One round's entry: the active model (and the run's candidate) on the frozen test set, the gate's view."""
        from moderation.models import Decision, ModelVersion

        active = ModelVersion.objects.get(is_active=True).version
        metrics, static = self.evaluate(active), self.static
        entry = {
            "round": round_number,
            "model_version": active,
            "decisions": Decision.objects.filter(undone_at__isnull=True).count(),
            "precision": round(float(metrics["precision"] or 0.0), 4),
            "recall": round(float(metrics["recall"]), 4),
            "static_precision": round(float(static["precision"] or 0.0), 4),
            "static_recall": round(float(static["recall"]), 4),
            "accuracy": round(float(metrics["accuracy"]), 4),
            "streamed": self.streamed,
        }
        if run is not None:
            entry.update(
                {
                    "run": run.pk,
                    "run_status": run.status,
                    "candidate": run.model_version,
                    "gate": run.reason,
                    "new_examples": run.new_examples,
                    "total_examples": run.total_examples,
                    "retrain_seconds": round((run.finished_at - run.started_at).total_seconds(), 1),
                }
            )
            if run.model_version:
                # The candidate on the frozen test set too, so a reader can check each of the gate's calls.
                judged = self.evaluate(run.model_version)
                entry["candidate_test"] = {
                    "precision": round(float(judged["precision"] or 0.0), 4),
                    "recall": round(float(judged["recall"]), 4),
                }
            # What the gate saw on the weighted holdout, next to what the frozen test set says.
            for side in ("candidate", "active"):
                figures = (run.gate or {}).get(side) or {}
                if figures:
                    entry[f"gate_{side}"] = {
                        key: round(float(figures[key]), 4) if figures.get(key) is not None else None
                        for key in ("precision", "recall", "weighted_n")
                    }
        self.rounds.append(entry)
        log(
            f"round {round_number}: {active} precision {entry['precision']:.3f} recall {entry['recall']:.3f} "
            f"(static {entry['static_precision']:.3f}/{entry['static_recall']:.3f}), "
            f"{entry['decisions']} decisions"
            + (f"; run {run.pk} {run.status}: {run.reason}" if run is not None else "")
        )

    def run(self, deadline: float) -> int:
        """Stream, score, moderate and retrain until `--retrains` runs finished; returns how many did."""
        from moderation.models import TrainingRun, TrainingRunStatus

        unfinished = TrainingRun.objects.filter(status__in=[TrainingRunStatus.QUEUED, TrainingRunStatus.RUNNING])
        wait = self.services.wait_until
        self.record(0)
        finished_runs = 0
        while finished_runs < self.args.retrains and self.streamed < len(self.stream):
            if time.monotonic() > deadline:
                raise TimeoutError("the loop did not reach its retrains in time")
            chunk = self.stream[self.streamed : self.streamed + self.args.chunk]
            for offset, (row, label, transform) in enumerate(chunk):
                self.post(self.streamed + offset, row, label, transform)
            self.streamed += len(chunk)
            wait(self.settled, 600, "scores of the posted images")
            self.work_queue()
            while unfinished.exists():
                wait(lambda: not unfinished.exists(), 1200, "the training run", interval=1.0)
                for run in TrainingRun.objects.order_by("id")[finished_runs:]:
                    wait(self.settled, 600, "re-scoring after the run")
                    finished_runs += 1
                    self.record(finished_runs, run)
                # Images re-scored by a promoted model may have joined the queue; the moderator works them too.
                self.work_queue()
        return finished_runs


def main() -> int:
    """Run the simulation against a fresh desk and write loop.json and loop.png."""
    args = parse_args()
    pair = ClassPair.parse(args.classes)
    work = clean_work_dir(args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    # A plain SIGTERM would end the run without the `finally` below and leave its workers consuming the queues.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    machine = machine_info()
    size = args.image_size or "native"
    log(f"classes: {pair.prohibited} (prohibited) vs {pair.allowed}; backbone {args.backbone} at {size} px")
    retrain_hparams = {
        **({"image_size": args.image_size} if args.image_size else {}),
        **json.loads(args.retrain_hparams),
    }
    env = start_from_nothing(
        work,
        args.database_url,
        args.redis_url,
        flush_broker=False,
        DATABASE_CONN_MAX_AGE="0",
        VIGIA_BACKBONE=args.backbone,
        VIGIA_BACKBONE_CACHE=os.environ.get("VIGIA_BACKBONE_CACHE", str(Path.home() / ".cache" / "vigia")),
        VIGIA_TRAINING_HPARAMS=json.dumps(retrain_hparams),
    )
    initial, first_version = train_first_model(args, pair, work, env)
    log(f"initial model {first_version} trained on {args.initial_per_class} images per class")
    moderator, token = configure_desk(args, pair, initial)
    services = Services(env, work)
    try:
        start_services(services)
        simulation = Simulation(args, pair, services, token, moderator, first_version, work)
        finished_runs = simulation.run(deadline=started + args.timeout)
        rollout = rollout_report()
    finally:
        services.stop()
    for item in rollout:
        log(
            f"rollout of {item['version']}: {item['old_model_scores_after_promotion']} scores by {item['replaced']} "
            f"after promotion (last {item['last_old_model_score_s']} s after it)"
        )
    rounds = simulation.rounds
    config = {
        "machine": machine,
        "classes": list(pair.labels),
        "backbone": args.backbone,
        "image_size": args.image_size,
        "threshold": args.threshold,
        "batch_size": args.batch_size,
        "audit_rate": args.audit_rate,
        "audit_sampling": args.audit_sampling,
        "min_holdout": args.min_holdout,
        "retrain_hparams": json.loads(args.retrain_hparams),
        "seed": args.seed,
        "reupload_share": args.reupload_share,
        "reuploads": sum(1 for _row, _label, transform in simulation.stream[: simulation.streamed] if transform),
        "seconds": round(time.monotonic() - started, 1),
    }
    from bench.harness.report import holdout_near_duplicates

    near = holdout_near_duplicates()
    log(f"holdout examples with a near-duplicate in training: {near}")
    write_json(
        args.out / "loop.json",
        {"rounds": rounds, "rollout": rollout, "holdout_near_duplicates": near, "config": config},
    )
    plot_loop_rounds(rounds, args.out / "loop.png", pair.prohibited, pair.allowed, args.threshold)
    log(f"wrote {args.out / 'loop.json'} and loop.png in {time.monotonic() - started:.0f} s")
    last = rounds[-1]
    ok = (
        finished_runs >= args.retrains
        and last["precision"] >= 0.9
        and last["recall"] >= 0.9
        and last["precision"] > last["static_precision"]
        and last["recall"] > last["static_recall"]
    )
    log("target met" if ok else "target NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
