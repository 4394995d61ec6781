"""Rollout benchmark: after a promotion, how long until every scoring worker process serves the new model?

Run: `.venv/bin/python bench/rollout.py` (make bench-rollout). It needs PostgreSQL and Redis (the same ones the
tests use). A real Celery scoring worker (prefork, `--children` single-threaded children) and gunicorn run
against a throwaway database (`vigia_bench_rollout`) and Redis database 13, both emptied at the start. Two
models are trained on Fashion-MNIST (MobileNet V1, the product's default, unless `--backbone` says otherwise:
`tiny` loads in a fraction of the time and only checks the mechanism), then the benchmark
alternates `services.model_versions.activate_version` between them `--activations` times, `--pause` seconds
apart, and measures for each activation, from the moment the call starts:

- serving_s per worker process: until the process serves the new version, from the switch time the process
  itself reports (`since` in the `vigia:serving` hash), and reported_s: until this benchmark saw that report.
- scored_by_new_s: until a photo posted through the API right after the activation has a score by the new
  version, and which version scored it first (the replaced model must never score it).

Writes bench/results/rollout.json: per-activation figures plus their max and median. Target: a promoted model
serves in every worker process within 10 s.
"""

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness.report import load_average, log, machine_info, summary, write_results  # noqa: E402
from bench.harness.stack import (  # noqa: E402
    Services,
    child_pids,
    marketplace_token,
    scoring_services,
    start_from_nothing,
)
from bench.harness.workload import jpeg_photos, post_listing, train_served_model  # noqa: E402

TARGET_S = 10.0


def parse_args():
    """The command line: activations and their pace, services, backbone, database, broker and output."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activations", type=int, default=10, help="promotions and rollbacks, alternating")
    parser.add_argument("--pause", type=float, default=15.0, help="seconds between two activations")
    parser.add_argument("--children", type=int, default=2, help="scoring worker children (one TensorFlow thread each)")
    parser.add_argument("--web-workers", type=int, default=1, help="gunicorn worker processes")
    parser.add_argument(
        "--backbone",
        default="mobilenet_v1",
        help="backbone of both models: the product's default, whose load time a switch pays (tiny: a quick check)",
    )
    parser.add_argument("--train-per-class", type=int, default=20, help="training photos per Fashion-MNIST class")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one activation after this long")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_ROLLOUT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vigia_bench_rollout"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_ROLLOUT_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "rollout.json")
    return parser.parse_args()


def worker_children(services: Services) -> list[int]:
    """The PIDs of the scoring worker's pool children."""
    return child_pids(services["worker"].pid)


def serving_by_pid(redis_client) -> dict:
    """What each worker process reports serving (`vigia:serving`), by PID."""
    from moderation.selectors.serving import serving_workers

    return {entry.pid: entry for entry in serving_workers(client=redis_client)}


def wait_until_serving(services: Services, redis_client, version: str, timeout: float) -> None:
    """Until every child of the worker reports `version` (the start-up load counts too)."""
    deadline = time.monotonic() + timeout
    while True:
        children = worker_children(services)
        entries = serving_by_pid(redis_client)
        if children and all(pid in entries and entries[pid].version == version for pid in children):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker children {children} did not all report {version}: {entries}")
        services["worker"].check()
        time.sleep(0.2)


def measure_activation(index: int, version: str, services: Services, redis_client, session, token, photo, args):
    """Activate `version`, post one photo right after, and time the switch of every child and the photo's score."""
    from moderation.models import Score
    from moderation.services.model_versions import activate_version

    children = worker_children(services)
    started_wall, started = time.time(), time.monotonic()
    activate_version(version=version)
    activation_call_s = time.monotonic() - started
    _, body = post_listing(session, services.base, token, f"rollout-{index}-{version}", [photo])
    image_id = body["images"][0]["id"]
    posted_s = time.monotonic() - started

    reported: dict[int, float] = {}
    processes: dict[int, dict] = {}
    first_score = None
    deadline = started + args.timeout
    while len(reported) < len(children) or first_score is None:
        now = time.monotonic()
        for pid, entry in serving_by_pid(redis_client).items():
            if pid in children and pid not in reported and entry.version == version:
                reported[pid] = now - started
                processes[pid] = {
                    "pid": pid,
                    "serving_s": round(entry.since.timestamp() - started_wall, 3),
                    "reported_s": round(now - started, 3),
                    "load_seconds": entry.load_seconds,
                    "pointer_written_s": round(entry.pointer_mtime.timestamp() - started_wall, 3),
                }
        if first_score is None:
            first_score = Score.objects.filter(image_id=image_id).order_by("created_at").values("model_version").first()
        if now > deadline:
            break
        time.sleep(0.05)

    new_score = Score.objects.filter(image_id=image_id, model_version=version).values("created_at").first()
    missing = [pid for pid in children if pid not in reported]
    serving = [processes[pid]["serving_s"] for pid in processes]
    return {
        "index": index,
        "version": version,
        "activation_call_s": round(activation_call_s, 3),
        "photo_posted_s": round(posted_s, 3),
        "processes": [processes[pid] for pid in sorted(processes)],
        "processes_not_switched": missing,
        "all_serving_s": round(max(serving), 3) if serving and not missing else None,
        "all_reported_s": round(max(reported.values()), 3) if reported and not missing else None,
        "image_id": image_id,
        "first_score_version": first_score["model_version"] if first_score else None,
        "scored_by_new_s": round(new_score["created_at"].timestamp() - started_wall, 3) if new_score else None,
    }


def main() -> int:
    """Alternate the two models' activations against a fresh stack and write the results file."""
    args = parse_args()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-rollout-"))
    env = start_from_nothing(work, args.database_url, args.redis_url, VIGIA_TF_THREADS="1", LOG_LEVEL="WARNING")
    import redis
    from django.conf import settings

    from classifier.registry import Registry
    from moderation.selectors.serving import SERVING_HEARTBEAT_SECONDS
    from moderation.services.model_versions import sync_models

    redis_client = redis.Redis.from_url(args.redis_url)
    log(f"training two models ({args.backbone}, {args.train_per_class} photos per class)")
    first = train_served_model(work, args.backbone, args.train_per_class)
    second = train_served_model(work, args.backbone, args.train_per_class)
    Registry(work / "models").activate(first)
    sync_models()
    token = marketplace_token()
    photos = jpeg_photos("test", args.activations + 1)

    import requests

    services = scoring_services(env, work / "logs", args.children, args.web_workers)
    activations = []
    try:
        services.wait_healthy(timeout=180)
        wait_until_serving(services, redis_client, first, timeout=args.timeout)
        log(f"services up; {len(worker_children(services))} worker children serve {first}")
        session = requests.Session()
        current = first
        for index in range(args.activations):
            target = second if current == first else first
            result = measure_activation(index, target, services, redis_client, session, token, photos[index], args)
            activations.append(result)
            log(
                f"#{index} {current} -> {target}: every process serving after {result['all_serving_s']} s "
                f"(seen in Redis after {result['all_reported_s']} s); photo first scored by "
                f"{result['first_score_version']}, by {target} after {result['scored_by_new_s']} s"
            )
            current = target
            if index + 1 < args.activations:
                time.sleep(args.pause)
    finally:
        services.stop()

    machine["load_average_at_end"] = load_average()
    per_process = [p["serving_s"] for a in activations for p in a["processes"]]
    results = {
        "target_s": TARGET_S,
        "all_processes_serving_s": summary([a["all_serving_s"] for a in activations]),
        "all_processes_reported_s": summary([a["all_reported_s"] for a in activations]),
        "per_process_serving_s": summary(per_process),
        "photo_scored_by_new_s": summary([a["scored_by_new_s"] for a in activations]),
        "activations_missing_target": sum(
            1 for a in activations if a["all_serving_s"] is None or a["all_serving_s"] > TARGET_S
        ),
        "photos_scored_by_replaced_model": sum(1 for a in activations if a["first_score_version"] != a["version"]),
        "machine": machine,
        "details": {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "backbone": args.backbone,
            "versions": [first, second],
            "worker_children": args.children,
            "watch_seconds": settings.VIGIA_MODEL_WATCH_SECONDS,
            "heartbeat_seconds": SERVING_HEARTBEAT_SECONDS,
            "pause_s": args.pause,
            "timings_from": "the start of the activate_version call",
            "activations": activations,
        },
    }
    write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
