"""What a web worker costs in memory, and what `POST /api/v1/score` costs in time, under each scoring runtime.

A fresh stack per runtime (production settings, PostgreSQL, Redis, one scoring worker, gunicorn) with a model
trained on Fashion-MNIST; the resident memory of every gunicorn worker process is read after start-up, after
`--listings` listings were posted and after `--scores` calls of `/api/v1/score`, and each score call is timed.
Whether a web process has imported TensorFlow shows in its memory: about 0.9 GB with it, well under 200 MB
without.

    make bench-web-memory                    # both runtimes, results in bench/results/web_memory.json
    make bench-web-memory ARGS="--runtimes litert --scores 50"
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.report import log, machine_info, percentile, write_results  # noqa: E402
from bench.harness.stack import REPO, child_pids, marketplace_token, scoring_services, start_from_nothing  # noqa: E402
from bench.harness.workload import jpeg_photos, post_listing, train_served_model, upload, wait_scored  # noqa: E402


def parse_args() -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtimes", default="litert,keras", help="comma-separated VIGIA_RUNTIME values to measure")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--listings", type=int, default=20, help="listings of one photo posted before scoring")
    parser.add_argument("--scores", type=int, default=30, help="calls of /api/v1/score, one photo each")
    parser.add_argument("--backbone", default=os.environ.get("VIGIA_BACKBONE", "mobilenet_v1"))
    parser.add_argument("--train-per-class", type=int, default=10, help="training photos per Fashion-MNIST class")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "web_memory.json")
    return parser.parse_args()


def web_rss_mb(web_pid: int) -> list[float]:
    """Resident memory of each gunicorn worker process (the master's children), in MiB."""
    import psutil

    sizes = []
    for pid in child_pids(web_pid):
        try:
            sizes.append(round(psutil.Process(pid).memory_info().rss / 2**20, 1))
        except psutil.Error:
            continue
    return sizes


def measure(args: argparse.Namespace, runtime: str, photos: list[bytes]) -> dict:
    """One runtime on a fresh stack: web workers' memory at each stage and the latency of `/score`."""
    work = Path(tempfile.mkdtemp(prefix=f"vigia-web-{runtime}-"))
    env = start_from_nothing(work, args.database_url, args.redis_url, VIGIA_RUNTIME=runtime, LOG_LEVEL="WARNING")
    log(f"{runtime}: training the served model ({args.backbone}, {args.train_per_class} photos per class)")
    train_served_model(work, args.backbone, args.train_per_class)
    from moderation.services.model_versions import sync_models

    sync_models()
    token = marketplace_token()
    services = scoring_services(env, work / "logs", children=1, web_workers=args.web_workers)
    session = requests.Session()
    try:
        services.wait_healthy(timeout=240)
        web = services["web"].pid
        started = web_rss_mb(web)
        image_ids = []
        for index, data in enumerate(photos[: args.listings]):
            _, created = post_listing(session, services.base, token, f"mem-{runtime}-{index}", [data])
            image_ids += [image["id"] for image in created["images"]]
        wait_scored(image_ids, timeout=300)
        after_listings = web_rss_mb(web)
        latencies, statuses = [], {}
        for index, data in enumerate(photos[args.listings : args.listings + args.scores]):
            tick = time.perf_counter()
            response = session.post(
                f"{services.base}/api/v1/score",
                files={"image": upload(index, data)},
                headers={"Authorization": f"Token {token}"},
                timeout=60,
            )
            latencies.append(time.perf_counter() - tick)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
        after_scores = web_rss_mb(web)
    finally:
        services.stop()
        from django.db import connections

        # The next runtime starts from a dropped and re-created database: this process must not hold it open.
        connections.close_all()
    result = {
        "runtime": runtime,
        "web_workers": args.web_workers,
        "web_rss_mb_started": started,
        "web_rss_mb_after_listings": after_listings,
        "web_rss_mb_after_scores": after_scores,
        "web_rss_mb_max": max(after_scores or [0.0]),
        "score_statuses": statuses,
        "score_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "score_p95_ms": round(percentile(latencies, 95) * 1000, 1),
    }
    log(
        f"{runtime}: web RSS {started} MiB at start, {after_scores} MiB after {args.scores} scores; "
        f"/score p50 {result['score_p50_ms']} ms, p95 {result['score_p95_ms']} ms, statuses {statuses}"
    )
    return result


def main() -> int:
    """Measure every runtime asked for and write the results file."""
    args = parse_args()
    machine = machine_info()
    photos = jpeg_photos("test", args.listings + args.scores)
    runs = [measure(args, runtime.strip(), photos) for runtime in args.runtimes.split(",") if runtime.strip()]
    write_results(args.output, {"machine": machine, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
