"""Pipeline benchmark: Fashion-MNIST photos posted through the real API to real Celery workers, measured from outside.

Run: `.venv/bin/python bench/pipeline.py --images 2000` (make bench). It needs PostgreSQL and Redis (the same ones the
tests use) and writes bench/results/pipeline.json:

- pipeline_img_per_s: images from the first upload's start to the last stored score, through gunicorn, the
  ingest service, Redis and `--children` worker children of `--threads` threads each (VIGIA_SCORING_THREADS),
  serving with `--runtime` (LiteRT by default), micro-batching as in production.
- bare_keras_img_per_s / bare_litert_img_per_s: the served version (backbone + head) decoding and scoring the same
  JPEGs in batches of 32 in this process, with Keras (TensorFlow's default threads) and with its LiteRT file (one
  thread per core), in the same run, nothing else running: what the hardware does without the platform.
- ratio_vs_best: pipeline / the faster of the two bare runtimes (target >= 0.8). bare_img_per_s and ratio keep
  their earlier meaning, the bare Keras forward and the pipeline over it.
- upload_img_per_s: images/s the API took the uploads in, to tell when the web intake is the limit.
- backlog_img_per_s / backlog_ratio_vs_best: `--backlog` photos uploaded while the scoring worker is stopped
  (SIGSTOP), then scored from a standing queue once it resumes: the worker with the cores to itself but for
  PostgreSQL and Redis, as a scoring machine of its own would run (the documented scale-out path), over the
  faster bare runtime. Its CPU per image says what the platform adds to the forward pass.
- latency_p50_s / latency_p95_s: upload start to routed (flagged or cleared, i.e. in the review queue or out of
  it), for single-photo listings sent at half the measured pipeline rate (target p95 <= 1 s).
- queue_page_p95_ms / claim_next_p95_ms: the review queue's first page (`selectors.queue.queue_page`) and
  `services.review.claim_next` with 100,000 open (flagged) items bulk-inserted into PostgreSQL (target <= 50 ms).
- worker_rss_mb: the largest resident memory of a worker child, sampled through the run (target with LiteRT
  <= 350 MB; with Keras <= 1024 MB).

Everything runs against a throwaway database (`vigia_bench`) and Redis database 8, both emptied at the start.
"""

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness.report import load_average, log, machine_info, percentile, write_results  # noqa: E402
from bench.harness.stack import (  # noqa: E402
    ONE_CLIENT_API_RATE,
    Services,
    children_rss_mb,
    cpu_seconds,
    marketplace_token,
    scoring_services,
    start_from_nothing,
)
from bench.harness.workload import (  # noqa: E402
    jpeg_photos,
    post_listing,
    post_paced,
    train_served_model,
    wait_scored,
)


def parse_args():
    """The command line: workload sizes, services, backbone, database, broker and output."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="photos posted in the throughput phase")
    parser.add_argument("--per-listing", type=int, default=4, help="photos per listing in the throughput phase")
    parser.add_argument("--concurrency", type=int, default=6, help="parallel uploads in the throughput phase")
    parser.add_argument("--children", type=int, default=2, help="scoring worker children")
    parser.add_argument("--threads", type=int, default=1, help="model threads per child (VIGIA_SCORING_THREADS)")
    parser.add_argument("--runtime", choices=("litert", "keras"), default="litert", help="VIGIA_RUNTIME of workers")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--backbone", default=os.environ.get("VIGIA_BACKBONE", "mobilenet_v1"))
    parser.add_argument("--train-per-class", type=int, default=20, help="training photos per Fashion-MNIST class")
    parser.add_argument("--backlog", type=int, default=2000, help="photos scored from a standing queue (0: skip)")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="length of the half-load phase")
    parser.add_argument("--open-items", type=int, default=100_000, help="open review items for the queue timings")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of queue page and claim-next")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vigia_bench")
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------------- set-up


class RssSampler(threading.Thread):
    """The largest resident memory of any worker child, sampled twice a second until stopped."""

    def __init__(self, services: Services):
        super().__init__(daemon=True)
        self.services = services
        self.peak = 0.0
        self.stopped = threading.Event()

    def run(self):
        """Sample until `stopped` is set."""
        while not self.stopped.is_set():
            self.peak = max([self.peak, *children_rss_mb(self.services["worker"].pid)])
            self.stopped.wait(0.5)


# ---------------------------------------------------------------------------------------------------- phases


def cpu_use(services: Services) -> dict[str, float]:
    """CPU seconds used so far by the scoring worker, the web server, PostgreSQL, Redis and this process."""
    return {
        "worker": cpu_seconds([services["worker"].pid]),
        "web": cpu_seconds([services["web"].pid]),
        "postgres": cpu_seconds(name_prefix="postgres"),
        "redis": cpu_seconds(name_prefix="redis"),
        # This process alone (its uploads and polling), not the services it started.
        "uploader": os.times().user + os.times().system,
    }


def cpu_ms_per_image(before: dict[str, float], after: dict[str, float], images: int) -> dict[str, float]:
    """CPU milliseconds each part of the stack spent per image between two `cpu_use` readings."""
    return {part: round(1000 * (after[part] - before[part]) / images, 2) for part in before}


def throughput_phase(args, services: Services, token: str, photos: list[bytes], prefix: str) -> dict:
    """Post `photos` in listings of `--per-listing`, `--concurrency` at once; images per second until all scored.

    Also the CPU milliseconds each part of the stack spent per image meanwhile: on one machine the web intake,
    the database and the scoring worker share the cores that the bare forward pass has to itself.
    """
    import requests

    from moderation.models import ImageStatus, ListingImage

    groups = [photos[i : i + args.per_listing] for i in range(0, len(photos), args.per_listing)]
    local = threading.local()

    def send(indexed):
        index, group = indexed
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return post_listing(local.session, services.base, token, f"{prefix}-{index}", group)

    cpu_before = cpu_use(services)
    started = time.time()
    with ThreadPoolExecutor(args.concurrency) as pool:
        answers = list(pool.map(send, enumerate(groups)))
    uploaded = time.time()
    ids = [image["id"] for _, body in answers for image in body["images"]]
    wait_scored(ids, timeout=max(600, len(ids)))
    rows = ListingImage.objects.filter(pk__in=ids)
    last = max(rows.values_list("scored_at", flat=True))
    failed = rows.filter(status__in=[ImageStatus.FAILED, ImageStatus.INVALID]).count()
    seconds = last.timestamp() - started
    cpu_after = cpu_use(services)
    return {
        "cpu_ms_per_image": cpu_ms_per_image(cpu_before, cpu_after, len(ids)),
        "images": len(ids),
        "seconds": round(seconds, 2),
        "img_per_s": round(len(ids) / seconds, 2),
        "upload_seconds": round(uploaded - started, 2),
        "failed": failed,
    }


def backlog_phase(args, services: Services, token: str, photos: list[bytes], prefix: str) -> dict:
    """Upload `photos` with the scoring worker stopped, resume it, and time it scoring the standing queue.

    The web server is idle while the worker drains, so the worker has the cores but for the database and Redis:
    what a scoring machine of its own does per image, against the bare forward pass on the same cores.
    """
    import signal

    import psutil
    import requests

    worker = psutil.Process(services["worker"].pid)
    processes = [worker, *worker.children(recursive=True)]
    session = requests.Session()
    groups = [photos[i : i + args.per_listing] for i in range(0, len(photos), args.per_listing)]
    for process in processes:
        process.send_signal(signal.SIGSTOP)
    try:
        ids = []
        for index, group in enumerate(groups):
            _, body = post_listing(session, services.base, token, f"{prefix}-{index}", group)
            ids += [image["id"] for image in body["images"]]
        time.sleep(2)  # the outbox publishes on commit; let the last tasks reach the broker
    finally:
        cpu_before = cpu_use(services)
        resumed = time.time()
        for process in processes:
            process.send_signal(signal.SIGCONT)
    from moderation.models import ListingImage

    wait_scored(ids, timeout=max(600, len(ids)))
    last = max(ListingImage.objects.filter(pk__in=ids).values_list("scored_at", flat=True))
    cpu_after = cpu_use(services)
    seconds = last.timestamp() - resumed
    return {
        "images": len(ids),
        "seconds": round(seconds, 2),
        "img_per_s": round(len(ids) / seconds, 2),
        "cpu_ms_per_image": cpu_ms_per_image(cpu_before, cpu_after, len(ids)),
    }


def bare_phase(version: str, photos: list[bytes], work: Path) -> dict:
    """The served version alone on the same photos, Keras and LiteRT in turn: decode + forward per batch of 32."""
    from bench.harness.runtimes import decode_and_forward, served_forwards

    served = served_forwards(work / "models", version, threads=os.cpu_count())
    # Keras' threads are TensorFlow's default, set by nobody in this process; LiteRT gets one thread per core.
    return {runtime: decode_and_forward(model.forward, photos, model.image_size) for runtime, model in served.items()}


def latency_phase(args, services: Services, token: str, photos: list[bytes], rate: float, prefix: str) -> dict:
    """Single-photo listings at a steady `rate` per second; latency is upload start to the image being routed."""
    from moderation.models import ListingImage

    answers = post_paced(services.base, token, [[photo] for photo in photos], prefix, rate)
    starts = {body["images"][0]["id"]: started for started, body in answers}
    wait_scored(list(starts), timeout=300)
    scored = dict(ListingImage.objects.filter(pk__in=list(starts)).values_list("pk", "scored_at"))
    latencies = [scored[pk].timestamp() - started for pk, started in starts.items()]
    return {
        "images": len(latencies),
        "rate_per_s": round(rate, 2),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3),
    }


def queue_phase(args) -> dict:
    """Bulk-insert open items and time the review desk's queue page and claim-next calls."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection

    from moderation.models import ImageStatus, Listing, ListingImage
    from moderation.services.clients import get_or_create_client

    # Every listing belongs to a client; the open items are the benchmark marketplace's.
    owner, _ = get_or_create_client(name="bench")
    rng = random.Random(7)
    per_listing = 10
    started = time.perf_counter()
    for chunk_start in range(0, args.open_items, 20_000):
        count = min(20_000, args.open_items - chunk_start)
        listings = Listing.objects.bulk_create(
            [
                Listing(client=owner, external_id=f"open-{chunk_start + i}", title="open item", status="in_review")
                for i in range(0, count, per_listing)
            ]
        )
        images = []
        for offset in range(count):
            listing = listings[offset // per_listing]
            images.append(
                ListingImage(
                    listing=listing,
                    file=f"images/bench/{chunk_start + offset}.jpg",
                    sha256=f"{rng.getrandbits(256):064x}",
                    status=ImageStatus.FLAGGED,
                    prohibited_probability=rng.random(),
                    prohibited_label="Bag",
                    model_version="bench",
                )
            )
        ListingImage.objects.bulk_create(images, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    insert_seconds = time.perf_counter() - started
    open_items = ListingImage.objects.filter(status=ImageStatus.FLAGGED).count()

    from moderation.selectors.queue import queue_page
    from moderation.services.review import claim_next, release_claim

    def page():
        return queue_page()

    for _ in range(5):
        page()
    page_times = []
    for _ in range(args.repeats):
        tick = time.perf_counter()
        page()
        page_times.append((time.perf_counter() - tick) * 1000)

    moderators, _ = Group.objects.get_or_create(name="moderators")
    users = []
    for index in range(10):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-moderator-{index}")
        user.groups.add(moderators)
        users.append(user)
    claim_times = []
    for index in range(args.repeats + 5):
        user = users[index % len(users)]
        tick = time.perf_counter()
        item = claim_next(user=user)
        elapsed = (time.perf_counter() - tick) * 1000
        if item is not None:
            release_claim(user=user, image_id=item.pk)
        if index >= 5:
            claim_times.append(elapsed)
    return {
        "open_items": open_items,
        "insert_seconds": round(insert_seconds, 1),
        "queue_page_p50_ms": round(percentile(page_times, 50), 2),
        "queue_page_p95_ms": round(percentile(page_times, 95), 2),
        "claim_next_p50_ms": round(percentile(claim_times, 50), 2),
        "claim_next_p95_ms": round(percentile(claim_times, 95), 2),
        "notes": [],
    }


# ---------------------------------------------------------------------------------------------------- main


def main() -> int:
    """Run every phase against a fresh stack and write the results file."""
    args = parse_args()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-"))
    env = start_from_nothing(
        work,
        args.database_url,
        args.redis_url,
        VIGIA_SCORING_THREADS=str(args.threads),
        VIGIA_RUNTIME=args.runtime,
        LOG_LEVEL="WARNING",
        VIGIA_API_RATE=ONE_CLIENT_API_RATE,
    )
    log(f"training the served model ({args.backbone}, {args.train_per_class} photos per class)")
    version = train_served_model(work, args.backbone, args.train_per_class)
    from moderation.services.model_versions import sync_models

    sync_models()
    token = marketplace_token()

    photos = jpeg_photos("test", args.images + 200 + 2000 + args.backlog)
    warmup, measured = photos[:64], photos[64 : 64 + args.images]
    queued, spare = (
        photos[64 + args.images : 64 + args.images + args.backlog],
        photos[64 + args.images + args.backlog :],
    )

    services = scoring_services(env, work / "logs", args.children, args.web_workers)
    sampler = RssSampler(services)
    try:
        services.wait_healthy(timeout=180)
        log("services up; warming both worker children")
        for round_index in range(3):
            throughput_phase(
                args, services, token, warmup[round_index * 16 : round_index * 16 + 16], f"warm{round_index}"
            )
            # A child that has loaded its model: well above an idle child's memory in either runtime.
            loaded = [
                rss
                for rss in children_rss_mb(services["worker"].pid)
                if rss > (300 if args.runtime == "keras" else 120)
            ]
            if len(loaded) >= args.children:
                break
        sampler.start()
        log(f"throughput: {len(measured)} photos, {args.per_listing} per listing, {args.concurrency} uploads at once")
        throughput = throughput_phase(args, services, token, measured, "run")
        log(f"pipeline {throughput['img_per_s']} img/s")

        backlog = None
        if args.backlog:
            log(f"backlog: {len(queued)} photos uploaded with the worker stopped, then scored from the queue")
            backlog = backlog_phase(args, services, token, queued, "backlog")
            log(f"backlog {backlog['img_per_s']} img/s")

        log("bare model on the same photos, Keras then LiteRT")
        bare = bare_phase(version, measured, work)
        log(f"bare Keras {bare['keras']['img_per_s']} img/s, LiteRT {bare['litert']['img_per_s']} img/s")

        rate = throughput["img_per_s"] / 2
        count = max(20, min(len(spare), int(rate * args.latency_seconds)))
        log(f"latency at half load: {count} single-photo listings at {rate:.1f}/s")
        latency = latency_phase(args, services, token, spare[:count], rate, "lat")
        log(f"latency p50 {latency['p50_s']} s, p95 {latency['p95_s']} s")
        sampler.stopped.set()
        children_rss = children_rss_mb(services["worker"].pid)
    finally:
        sampler.stopped.set()
        services.stop()

    log(f"queue timings with {args.open_items} open items")
    queue = queue_phase(args)
    log(f"queue page p95 {queue['queue_page_p95_ms']} ms, claim-next p95 {queue['claim_next_p95_ms']} ms")

    import tensorflow as tf

    machine["load_average_at_end"] = load_average()
    machine["tensorflow"] = tf.__version__
    results = {
        "pipeline_img_per_s": throughput["img_per_s"],
        "bare_img_per_s": bare["keras"]["img_per_s"],
        "ratio": round(throughput["img_per_s"] / bare["keras"]["img_per_s"], 3),
        "bare_keras_img_per_s": bare["keras"]["img_per_s"],
        "bare_litert_img_per_s": bare["litert"]["img_per_s"],
        "ratio_vs_best": round(throughput["img_per_s"] / max(run["img_per_s"] for run in bare.values()), 3),
        "upload_img_per_s": round(throughput["images"] / throughput["upload_seconds"], 2),
        "backlog_img_per_s": backlog["img_per_s"] if backlog else None,
        "backlog_ratio_vs_best": (
            round(backlog["img_per_s"] / max(run["img_per_s"] for run in bare.values()), 3) if backlog else None
        ),
        "latency_p50_s": latency["p50_s"],
        "latency_p95_s": latency["p95_s"],
        "queue_page_p95_ms": queue["queue_page_p95_ms"],
        "claim_next_p95_ms": queue["claim_next_p95_ms"],
        "worker_rss_mb": round(max(sampler.peak, *children_rss, 0.0), 1),
        "machine": machine,
        "details": {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "backbone": args.backbone,
            "model_version": version,
            "worker_children": args.children,
            "threads_per_child": args.threads,
            "runtime": args.runtime,
            "web_workers": args.web_workers,
            "scoring_batch_size": int(os.environ.get("VIGIA_SCORING_BATCH_SIZE", "32")),
            "throughput": throughput,
            "backlog": backlog,
            "bare": {
                **bare,
                "method": "one process, decode + forward, batches of 32; Keras with TensorFlow's default threads, "
                "LiteRT with one thread per core",
            },
            "latency": latency,
            "queue": queue,
            "worker_children_rss_mb_at_end": [round(x, 1) for x in children_rss],
        },
    }
    write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
