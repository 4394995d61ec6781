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
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import machine_info  # noqa: E402

PYTHON = Path(sys.executable)
BIN = PYTHON.parent


def parse_args():
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_database(url: str) -> None:
    """Drop and create the benchmark's own database, so every run starts from nothing."""
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def png(pixels) -> bytes:
    from PIL import Image

    output = io.BytesIO()
    Image.fromarray(pixels).save(output, format="PNG")
    return output.getvalue()


def photo(pixels) -> bytes:
    """A Fashion-MNIST image as a PNG product photo: dark garment on white, as the classifier's export writes it.

    The dataset stores negatives (bright garment on black). The first model is trained on exported photos, so
    the stream and the frozen test set must look the same way, or the loop would be judged on another domain
    than the one it started from.
    """
    return png(255 - pixels)


class Processes:
    """Subprocesses of the run, each in its own process group, stopped together at the end."""

    def __init__(self, work: Path):
        self.work = work
        self.items: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log_file = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.items.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.items:
            if process.poll() is not None:
                tail = (self.work / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, process in self.items:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in self.items:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(condition, timeout: float, what: str, processes: Processes, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        processes.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def main() -> int:
    args = parse_args()
    prohibited, allowed = [name.strip() for name in args.classes.split(",")]
    work = args.work.resolve()
    if work.exists():
        # The feature and backbone caches survive reruns; everything else starts again.
        for child in work.iterdir():
            if child.name not in {"feature-cache", "backbone-cache"}:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    registry_root = work / "models"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "moderation.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-loop-secret-key-used-only-for-this-benchmark-0123456789",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": args.database_url,
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": args.redis_url,
        "VIGIA_VAR_DIR": str(work),
        "MEDIA_ROOT": str(work / "media"),
        "VIGIA_MODEL_REGISTRY": str(registry_root),
        "VIGIA_FEATURE_CACHE": str(work / "feature-cache"),
        "VIGIA_BACKBONE": args.backbone,
        "VIGIA_BACKBONE_CACHE": os.environ.get("VIGIA_BACKBONE_CACHE", str(Path.home() / ".cache" / "vigia")),
        "VIGIA_TRAINING_HPARAMS": json.dumps(
            {**({"image_size": args.image_size} if args.image_size else {}), **json.loads(args.retrain_hparams)}
        ),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO),
    }
    os.environ.update(env)
    # A plain SIGTERM would end the run without the `finally` below and leave its workers consuming the queues.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    processes = Processes(work)
    started = time.monotonic()
    try:
        return run(args, prohibited, allowed, work, registry_root, env, processes, started)
    finally:
        processes.stop()


def run(args, prohibited, allowed, work, registry_root, env, processes, started) -> int:
    machine = machine_info()
    import redis

    from classifier.datasets import FASHION_MNIST_CLASSES, FOLDER_NAMES, load_fashion_mnist

    index_of = {name: i for i, name in enumerate(FASHION_MNIST_CLASSES)}
    index_of.update({folder: i for i, folder in enumerate(FOLDER_NAMES)})
    for name in (prohibited, allowed):
        if name not in index_of:
            raise SystemExit(f"unknown Fashion-MNIST class {name!r}; choose from {', '.join(FOLDER_NAMES)}")
    p_label, a_label = FOLDER_NAMES[index_of[prohibited]], FOLDER_NAMES[index_of[allowed]]
    log(f"classes: {p_label} (prohibited) vs {a_label}; backbone {args.backbone} at {args.image_size or 'native'} px")

    fresh_database(args.database_url)
    # The broker is only checked, never emptied: REDIS_URL may be a Redis that holds other data.
    redis.Redis.from_url(args.redis_url).ping()

    # The first model: 20 photos per class, trained by the classifier's own command line.
    initial = work / "initial"
    subprocess.run(
        [str(PYTHON), "-m", "classifier", "export-fashion-mnist", "--out", str(initial), "--classes",
         f"{prohibited},{allowed}", "--split", "train", "--per-class", str(args.initial_per_class)],
        check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    trained = subprocess.run(
        [str(PYTHON), "-m", "classifier", "train", "--data", str(initial), "--registry", str(registry_root),
         "--prohibited", p_label, "--backbone", args.backbone,
         "--cache-dir", str(work / "feature-cache"), "--seed", str(args.seed), "--activate", "--no-progress"]
        + (["--image-size", str(args.image_size)] if args.image_size else []),
        check=True, env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    first_version = json.loads(trained.stdout.strip().splitlines()[-1])["version"]
    log(f"initial model {first_version} trained on {args.initial_per_class} images per class")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from moderation import permissions
    from moderation.models import (
        Decision,
        ImageStatus,
        ListingImage,
        ModelVersion,
        Score,
        TrainingRun,
        TrainingRunStatus,
    )
    from moderation.selectors.settings import get_settings

    call_command("migrate", verbosity=0)
    call_command("sync_models", verbosity=0)
    call_command("import_training_set", str(initial), verbosity=0)
    settings_row = get_settings()
    settings_row.default_threshold = args.threshold
    settings_row.thresholds = {p_label: args.threshold}
    settings_row.retrain_batch_size = args.batch_size
    settings_row.gate_min_holdout_per_label = args.min_holdout
    settings_row.audit_rate = args.audit_rate
    settings_row.audit_sampling = args.audit_sampling
    settings_row.retrain_on_schedule = False
    settings_row.save()
    moderators, _ = permissions.ensure_groups()
    users = get_user_model().objects
    moderator = users.create_user("loop-moderator", password="unused-loop-password")
    moderator.groups.add(moderators)
    token = Token.objects.create(user=users.create_user("loop-marketplace", password="unused-loop-password")).key

    port = free_port()
    processes.start(
        "web",
        [str(BIN / "gunicorn"), "moderation.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--timeout", "120"],
        env,
    )
    celery = [str(BIN / "celery"), "-A", "moderation", "worker", "-c", "1", "--pool", "prefork", "-l", "info"]
    celery_flags = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    processes.start("scoring-worker", celery + ["-Q", "scoring,default", "-n", "loop-scoring@%h"] + celery_flags, env)
    processes.start("training-worker", celery + ["-Q", "training", "-n", "loop-training@%h"] + celery_flags, env)

    import requests

    base = f"http://127.0.0.1:{port}"

    def web_up():
        try:
            return requests.get(f"{base}/api/v1/health", timeout=2).status_code in (200, 503)
        except requests.RequestException:
            return False

    wait_for(web_up, 60, "the web server", processes)
    for name in ("scoring-worker", "training-worker"):
        wait_for(lambda n=name: b" ready." in (work / f"{n}.log").read_bytes(), 90, name, processes)
    log(f"web server on {base}, scoring and training workers ready")

    # The stream: train-split photos after the initial ones, both classes shuffled together.
    x_train, y_train = load_fashion_mnist("train")
    stream = []
    for name, label in ((prohibited, p_label), (allowed, a_label)):
        rows = [int(i) for i in (y_train == index_of[name]).nonzero()[0]]
        rows = rows[args.initial_per_class : args.initial_per_class + args.stream_per_class]
        stream += [(row, label) for row in rows]
    random.Random(args.seed).shuffle(stream)

    # The frozen test set: the test split, never streamed and never trained on.
    from classifier.data import Example
    from classifier.evaluation import evaluate_model
    from classifier.registry import Registry

    x_test, y_test = load_fashion_mnist("test")
    test_set = []
    for name, label in ((prohibited, p_label), (allowed, a_label)):
        for row in (y_test == index_of[name]).nonzero()[0][: args.test_per_class]:
            data = photo(x_test[int(row)])
            test_set.append(Example(sha256=hashlib.sha256(data).hexdigest(), label=label, data=data))
    registry = Registry(registry_root)
    evaluated: dict[str, dict] = {}

    def evaluate(version: str) -> dict:
        if version not in evaluated:
            evaluated[version] = evaluate_model(registry.load(version), test_set, threshold=args.threshold)
        return evaluated[version]

    truth: dict[str, str] = {}
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"

    def post(index: int, row: int, label: str) -> int:
        external_id = f"loop-{index}"
        truth[external_id] = label
        response = session.post(
            f"{base}/api/v1/listings",
            data={"external_id": external_id, "title": f"listing {index}"},
            files=[("images", (f"{index}.png", photo(x_train[row]), "image/png"))],
            timeout=60,
        )
        if response.status_code != 201:
            raise RuntimeError(f"upload {index} failed: {response.status_code} {response.text[:300]}")
        return response.json()["id"]

    from moderation.services import review

    def work_queue() -> int:
        """The simulated moderator: claim the next item, decide it by its true label, until the queue is empty."""
        decided = 0
        while True:
            image = review.claim_next(moderator)
            if image is None:
                return decided
            outcome = "confirm" if truth[image.listing.external_id] == p_label else "reject"
            review.decide(user=moderator, image_id=image.pk, outcome=outcome)
            decided += 1

    def settled() -> bool:
        """Nothing waits for a score, and every flagged image was scored by the active model."""
        active = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
        open_images = ListingImage.objects.filter(status__in=[ImageStatus.PENDING, ImageStatus.FLAGGED])
        return (
            not open_images.filter(status=ImageStatus.PENDING).exists()
            and not open_images.exclude(model_version=active).exists()
        )

    static = evaluate(first_version)
    rounds = []

    def record(round_number: int, run=None) -> None:
        active = ModelVersion.objects.get(is_active=True).version
        metrics = evaluate(active)
        entry = {
            "round": round_number,
            "model_version": active,
            "decisions": Decision.objects.filter(undone_at__isnull=True).count(),
            "precision": round(float(metrics["precision"] or 0.0), 4),
            "recall": round(float(metrics["recall"]), 4),
            "static_precision": round(float(static["precision"] or 0.0), 4),
            "static_recall": round(float(static["recall"]), 4),
            "accuracy": round(float(metrics["accuracy"]), 4),
            "streamed": streamed,
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
                judged = evaluate(run.model_version)
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
        rounds.append(entry)
        log(
            f"round {round_number}: {active} precision {entry['precision']:.3f} recall {entry['recall']:.3f} "
            f"(static {entry['static_precision']:.3f}/{entry['static_recall']:.3f}), "
            f"{entry['decisions']} decisions"
            + (f"; run {run.pk} {run.status}: {run.reason}" if run is not None else "")
        )

    streamed = 0
    record(0)
    finished_runs = 0
    deadline = started + args.timeout
    while finished_runs < args.retrains and streamed < len(stream):
        if time.monotonic() > deadline:
            raise TimeoutError("the loop did not reach its retrains in time")
        chunk = stream[streamed : streamed + args.chunk]
        for offset, (row, label) in enumerate(chunk):
            post(streamed + offset, row, label)
        streamed += len(chunk)
        wait_for(settled, 600, "scores of the posted images", processes)
        work_queue()
        while TrainingRun.objects.filter(status__in=[TrainingRunStatus.QUEUED, TrainingRunStatus.RUNNING]).exists():
            wait_for(
                lambda: (
                    not TrainingRun.objects.filter(
                        status__in=[TrainingRunStatus.QUEUED, TrainingRunStatus.RUNNING]
                    ).exists()
                ),
                1200,
                "the training run",
                processes,
                interval=1.0,
            )
            for run in TrainingRun.objects.order_by("id")[finished_runs:]:
                wait_for(settled, 600, "re-scoring after the run", processes)
                finished_runs += 1
                record(finished_runs, run)
            # Images re-scored by a promoted model may have joined the queue; the moderator works them too.
            work_queue()

    rollout = rollout_report(ModelVersion, Score)
    for item in rollout:
        log(
            f"rollout of {item['version']}: {item['old_model_scores_after_promotion']} scores by {item['replaced']} "
            f"after promotion (last {item['last_old_model_score_s']} s after it)"
        )
    config = {
        "machine": machine,
        "classes": [p_label, a_label],
        "backbone": args.backbone,
        "image_size": args.image_size,
        "threshold": args.threshold,
        "batch_size": args.batch_size,
        "audit_rate": args.audit_rate,
        "audit_sampling": args.audit_sampling,
        "min_holdout": args.min_holdout,
        "retrain_hparams": json.loads(args.retrain_hparams),
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
    }
    (args.out / "loop.json").write_text(
        json.dumps({"rounds": rounds, "rollout": rollout, "config": config}, indent=2) + "\n"
    )
    plot(rounds, args.out / "loop.png", p_label, a_label, args)
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


def rollout_report(ModelVersion, Score) -> list[dict]:  # noqa: N803 - the model classes, imported after setup
    """For each promotion: whether any worker kept scoring with the model it replaced, read off the scores.

    Every score records the model version that produced it, so a score by the replaced model created after the
    promotion is a worker still serving the old model; the last one's lag bounds how long the switch took in
    every worker process that scored anything. The first score by the new model measures when it was first
    needed, which includes the benchmark's own pauses, so it is reported but is not the switch time.
    """
    promoted = list(ModelVersion.objects.filter(activated_at__isnull=False).order_by("activated_at"))
    report = []
    for previous, current in zip(promoted, promoted[1:], strict=False):
        after = Score.objects.filter(created_at__gte=current.activated_at)
        stale = after.filter(model_version=previous.version).order_by("-created_at")
        first_new = after.filter(model_version=current.version).order_by("created_at").first()
        last_stale = stale.first()
        report.append(
            {
                "version": current.version,
                "replaced": previous.version,
                "old_model_scores_after_promotion": stale.count(),
                "last_old_model_score_s": (
                    round((last_stale.created_at - current.activated_at).total_seconds(), 3) if last_stale else None
                ),
                "first_new_model_score_s": (
                    round((first_new.created_at - current.activated_at).total_seconds(), 3) if first_new else None
                ),
                "new_model_scores": after.filter(model_version=current.version).count(),
            }
        )
    return report


def plot(rounds: list[dict], path: Path, p_label: str, a_label: str, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["round"] for r in rounds]
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    axis.plot(x, [r["precision"] for r in rounds], "o-", color="tab:blue", label="precision, retrained loop")
    axis.plot(x, [r["recall"] for r in rounds], "s-", color="tab:orange", label="recall, retrained loop")
    faded = {"alpha": 0.45, "linestyle": "--"}
    axis.plot(
        x, [r["static_precision"] for r in rounds], "o", color="tab:blue", label="precision, never retrained", **faded
    )
    axis.plot(
        x, [r["static_recall"] for r in rounds], "s", color="tab:orange", label="recall, never retrained", **faded
    )
    axis.axhline(0.9, color="grey", linewidth=0.8, linestyle=":")
    for r in rounds:
        axis.annotate(str(r["decisions"]), (r["round"], 0.02), ha="center", fontsize=7, color="grey")
    axis.set_ylim(0, 1.02)
    axis.set_xticks(x)
    axis.set_xlabel("retrain (grey: moderator decisions spent so far)")
    axis.set_ylabel(f"queue precision / recall at {args.threshold}")
    axis.set_title(f"Learning loop: {p_label} (prohibited) vs {a_label}, frozen test set")
    axis.legend(loc="center right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
