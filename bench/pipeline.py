"""Pipeline benchmark: Fashion-MNIST photos posted through the real API to real Celery workers, measured from outside.

Run: `.venv/bin/python bench/pipeline.py --images 2000` (make bench). It needs PostgreSQL and Redis (the same ones the
tests use) and writes bench/results/pipeline.json:

- pipeline_img_per_s: images from the first upload's start to the last stored score, through gunicorn, the
  ingest service, Redis and `--children` single-threaded worker children, micro-batching as in production.
- bare_img_per_s: the served model (backbone + head) decoding and scoring the same JPEGs in batches of 32 in one
  process with TensorFlow's default threads, nothing else running: what the hardware can do without the platform.
- ratio: pipeline / bare (target >= 0.8).
- latency_p50_s / latency_p95_s: upload start to routed (flagged or cleared, i.e. in the review queue or out of
  it), for single-photo listings sent at half the measured pipeline rate (target p95 <= 1 s).
- queue_page_p95_ms / claim_next_p95_ms: the review queue's first page (`selectors.queue.queue_page`) and
  `services.review.claim_next` with 100,000 open (flagged) items bulk-inserted into PostgreSQL (target <= 50 ms).
- worker_rss_mb: the largest resident memory of a worker child, sampled through the run (target <= 1024 MB).

Everything runs against a throwaway database (`vigia_bench`) and Redis database 8, both emptied at the start.
"""

import argparse
import hashlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent

from machine import machine_info  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="photos posted in the throughput phase")
    parser.add_argument("--per-listing", type=int, default=4, help="photos per listing in the throughput phase")
    parser.add_argument("--concurrency", type=int, default=6, help="parallel uploads in the throughput phase")
    parser.add_argument("--children", type=int, default=2, help="worker children (one TensorFlow thread each)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--backbone", default=os.environ.get("VIGIA_BACKBONE", "mobilenet_v1"))
    parser.add_argument("--train-per-class", type=int, default=20, help="training photos per Fashion-MNIST class")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="length of the half-load phase")
    parser.add_argument("--open-items", type=int, default=100_000, help="open review items for the queue timings")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of queue page and claim-next")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vigia_bench")
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    return parser.parse_args()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- set-up


def recreate_database(url: str) -> None:
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(url)
    name = config["NAME"]
    admin = psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"],
        password=config["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def configure_environment(args, work: Path) -> dict:
    """Production settings (DEBUG off) pointed at throwaway state; shared by this process and its children."""
    env = {
        "DJANGO_SETTINGS_MODULE": "moderation.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + hashlib.sha256(str(work).encode()).hexdigest(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "VIGIA_VAR_DIR": str(work),
        "MEDIA_ROOT": str(work / "media"),
        "VIGIA_MODEL_REGISTRY": str(work / "models"),
        "VIGIA_FEATURE_CACHE": str(work / "feature-cache"),
        "VIGIA_TF_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
    }
    os.environ.update(env)
    return {**os.environ}


def start_from_nothing(args, work: Path) -> dict:
    """A fresh database and broker database, Django set up and migrated; returns the children's environment."""
    env = configure_environment(args, work)
    log(f"work dir {work}; database {args.database_url}; redis {args.redis_url}")
    recreate_database(args.database_url)
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def marketplace_token() -> str:
    """Turn off the audit sample (every photo's route is then its score alone) and return an API token."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from moderation.selectors.settings import get_settings

    row = get_settings()
    row.audit_rate = 0.0
    row.save()
    return Token.objects.create(user=get_user_model().objects.create_user("bench-marketplace")).key


def write_results(output: Path, results: dict) -> None:
    """Write the results file and print its headline figures (everything but details and machine)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {output}")
    print(json.dumps({k: v for k, v in results.items() if k not in ("details", "machine")}, indent=2))


def jpeg_photos(split: str, count: int, offset: int = 0) -> list[bytes]:
    """Distinct Fashion-MNIST photos as JPEG files, as a marketplace would send them."""
    from PIL import Image

    from classifier.datasets import load_fashion_mnist

    pixels, _ = load_fashion_mnist(split)
    photos, seen = [], set()
    index = offset
    while len(photos) < count:
        output = io.BytesIO()
        Image.fromarray(pixels[index % len(pixels)], "L").save(output, format="JPEG", quality=90)
        data = output.getvalue()
        index += 1
        digest = hashlib.sha256(data).hexdigest()
        if digest not in seen:
            seen.add(digest)
            photos.append(data)
    return photos


def train_served_model(args, work: Path) -> str:
    """Train and activate a model on Fashion-MNIST with the chosen backbone; "Bag" plays the prohibited item."""
    from PIL import Image

    from classifier.data import Example
    from classifier.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
    from classifier.hparams import HParams
    from classifier.registry import Registry
    from classifier.training import train_model

    pixels, labels = load_fashion_mnist("train")
    counts: dict[str, int] = {}
    examples = []
    for image, label_index in zip(pixels, labels, strict=True):
        label = FASHION_MNIST_CLASSES[int(label_index)]
        if counts.get(label, 0) >= args.train_per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        output = io.BytesIO()
        Image.fromarray(image, "L").save(output, format="PNG")
        data = output.getvalue()
        examples.append(Example(sha256=hashlib.sha256(data).hexdigest(), label=label, data=data))
        if len(examples) >= args.train_per_class * len(FASHION_MNIST_CLASSES):
            break
    hparams = HParams(backbone=args.backbone, epochs=20, early_stopping_patience=5)
    result = train_model(examples, list(FASHION_MNIST_CLASSES), ["Bag"], hparams, cache_dir=work / "backbone-cache")
    registry = Registry(work / "models")
    version = registry.save(result)
    registry.activate(version)
    return version


class Services:
    """gunicorn and the Celery worker, each in its own process group so they stop cleanly."""

    def __init__(self, args, env: dict, work: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.worker = self._start(
            "worker",
            [str(BIN / "celery"), "-A", "moderation", "worker", "-Q", "scoring,default", "-c", str(args.children)]
            + ["--pool", "prefork", "-n", "bench@%h", "-l", "warning"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
            env,
        )
        self.web = self._start(
            "web",
            [str(BIN / "gunicorn"), "moderation.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(args.web_workers)]
            + ["-k", "gthread", "--threads", "4", "--timeout", "120"],
            env,
        )

    def _start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        handle = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - open for the process's lifetime
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def worker_children_rss_mb(self) -> list[float]:
        import psutil

        try:
            children = psutil.Process(self.worker.pid).children(recursive=True)
            return [child.memory_info().rss / 2**20 for child in children]
        except psutil.Error:
            return []

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class RssSampler(threading.Thread):
    def __init__(self, services: Services):
        super().__init__(daemon=True)
        self.services = services
        self.peak = 0.0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.peak = max([self.peak, *self.services.worker_children_rss_mb()])
            self.stopped.wait(0.5)


# ---------------------------------------------------------------------------------------------------- phases


def post_listing(session, base: str, token: str, external_id: str, photos: list[bytes]) -> tuple[float, dict]:
    started = time.time()
    files = [("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    response = session.post(
        f"{base}/api/v1/listings",
        data={"external_id": external_id, "title": "bench listing"},
        files=files,
        headers={"Authorization": f"Token {token}"},
        timeout=120,
    )
    if response.status_code != 201:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:300]}")
    return started, response.json()


def wait_scored(image_ids: list[int], timeout: float) -> None:
    from moderation.models import ImageStatus, ListingImage

    deadline = time.monotonic() + timeout
    while ListingImage.objects.filter(pk__in=image_ids, status=ImageStatus.PENDING).exists():
        if time.monotonic() > deadline:
            left = ListingImage.objects.filter(pk__in=image_ids, status=ImageStatus.PENDING).count()
            raise RuntimeError(f"{left} images still pending after {timeout} s")
        time.sleep(0.25)


def wait_ready(services: Services, timeout: float = 180) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(f"{services.base}/api/v1/health", timeout=5)
            if response.status_code == 200:
                return
            detail = response.text[:300]
        except requests.RequestException as error:
            detail = str(error)
        if time.monotonic() > deadline:
            raise RuntimeError(f"services not healthy: {detail}")
        time.sleep(1)


def throughput_phase(args, services: Services, token: str, photos: list[bytes], prefix: str) -> dict:
    import requests

    from moderation.models import ImageStatus, ListingImage

    groups = [photos[i : i + args.per_listing] for i in range(0, len(photos), args.per_listing)]
    local = threading.local()

    def send(indexed):
        index, group = indexed
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return post_listing(local.session, services.base, token, f"{prefix}-{index}", group)

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
    return {
        "images": len(ids),
        "seconds": round(seconds, 2),
        "img_per_s": round(len(ids) / seconds, 2),
        "upload_seconds": round(uploaded - started, 2),
        "failed": failed,
    }


def bare_phase(version: str, photos: list[bytes], work: Path) -> dict:
    """The served model alone on the same photos: decode + one forward pass per batch of 32."""
    import numpy as np

    from classifier.images import decode_image
    from classifier.registry import Registry
    from classifier.scoring import compiled_forward

    loaded = Registry(work / "models").load(version)
    forward = compiled_forward(loaded.model, loaded.image_size)
    size = loaded.image_size
    forward(np.zeros((32, size, size, 3), dtype=np.float32))  # trace once, outside the timing
    forward(np.zeros((8, size, size, 3), dtype=np.float32))
    forward_seconds = 0.0
    started = time.perf_counter()
    for start in range(0, len(photos), 32):
        batch = np.stack([decode_image(data, size) for data in photos[start : start + 32]]).astype(np.float32)
        tick = time.perf_counter()
        np.asarray(forward(batch))
        forward_seconds += time.perf_counter() - tick
    total = time.perf_counter() - started
    return {
        "img_per_s": round(len(photos) / total, 2),
        "forward_only_img_per_s": round(len(photos) / forward_seconds, 2),
        "image_size": size,
    }


def latency_phase(args, services: Services, token: str, photos: list[bytes], rate: float, prefix: str) -> dict:
    """Single-photo listings at a steady `rate` per second; latency is upload start to the image being routed."""
    import requests

    from moderation.models import ListingImage

    local = threading.local()
    starts: dict[int, float] = {}

    def send(index):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started, body = post_listing(local.session, services.base, token, f"{prefix}-{index}", [photos[index]])
        starts[body["images"][0]["id"]] = started

    interval = 1.0 / rate
    with ThreadPoolExecutor(16) as pool:
        origin = time.monotonic()
        futures = []
        for index in range(len(photos)):
            delay = origin + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, index))
        for future in futures:
            future.result()
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

    rng = random.Random(7)
    per_listing = 10
    started = time.perf_counter()
    for chunk_start in range(0, args.open_items, 20_000):
        count = min(20_000, args.open_items - chunk_start)
        listings = Listing.objects.bulk_create(
            [
                Listing(external_id=f"open-{chunk_start + i}", title="open item", status="in_review")
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

    notes = []
    try:
        from moderation.selectors.queue import queue_page

        def page(cursor=None):
            return queue_page(cursor)

    except ImportError:
        notes.append("queue_page not available: timed the equivalent ORM query")

        def page(cursor=None):
            return list(
                ListingImage.objects.filter(status=ImageStatus.FLAGGED)
                .select_related("listing")
                .order_by("-prohibited_probability", "created_at", "id")[:50]
            )

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
    try:
        from moderation.services.review import claim_next, release_claim
    except ImportError:
        claim_next = release_claim = None
        notes.append("claim_next not available")
    claim_times = []
    if claim_next is not None:
        for index in range(args.repeats + 5):
            user = users[index % len(users)]
            tick = time.perf_counter()
            item = claim_next(user)
            elapsed = (time.perf_counter() - tick) * 1000
            if item is not None:
                release_claim(user, item.pk)
            if index >= 5:
                claim_times.append(elapsed)
    return {
        "open_items": open_items,
        "insert_seconds": round(insert_seconds, 1),
        "queue_page_p50_ms": round(percentile(page_times, 50), 2),
        "queue_page_p95_ms": round(percentile(page_times, 95), 2),
        "claim_next_p50_ms": round(percentile(claim_times, 50), 2) if claim_times else None,
        "claim_next_p95_ms": round(percentile(claim_times, 95), 2) if claim_times else None,
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-"))
    env = start_from_nothing(args, work)
    log(f"training the served model ({args.backbone}, {args.train_per_class} photos per class)")
    version = train_served_model(args, work)
    from moderation.services.model_versions import sync_models

    sync_models()
    token = marketplace_token()

    photos = jpeg_photos("test", args.images + 200 + 2000)
    warmup, measured, spare = photos[:64], photos[64 : 64 + args.images], photos[64 + args.images :]

    services = Services(args, env, work)
    sampler = RssSampler(services)
    results: dict = {}
    try:
        wait_ready(services)
        log("services up; warming both worker children")
        for round_index in range(3):
            throughput_phase(
                args, services, token, warmup[round_index * 16 : round_index * 16 + 16], f"warm{round_index}"
            )
            loaded = [rss for rss in services.worker_children_rss_mb() if rss > 300]
            if len(loaded) >= args.children:
                break
        sampler.start()
        log(f"throughput: {len(measured)} photos, {args.per_listing} per listing, {args.concurrency} uploads at once")
        throughput = throughput_phase(args, services, token, measured, "run")
        log(f"pipeline {throughput['img_per_s']} img/s")

        log("bare model on the same photos")
        bare = bare_phase(version, measured, work)
        log(f"bare {bare['img_per_s']} img/s")

        rate = throughput["img_per_s"] / 2
        count = max(20, min(len(spare), int(rate * args.latency_seconds)))
        log(f"latency at half load: {count} single-photo listings at {rate:.1f}/s")
        latency = latency_phase(args, services, token, spare[:count], rate, "lat")
        log(f"latency p50 {latency['p50_s']} s, p95 {latency['p95_s']} s")
        sampler.stopped.set()
        children_rss = services.worker_children_rss_mb()
    finally:
        sampler.stopped.set()
        services.stop()

    log(f"queue timings with {args.open_items} open items")
    queue = queue_phase(args)
    log(f"queue page p95 {queue['queue_page_p95_ms']} ms, claim-next p95 {queue['claim_next_p95_ms']} ms")

    import tensorflow as tf

    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["tensorflow"] = tf.__version__
    results = {
        "pipeline_img_per_s": throughput["img_per_s"],
        "bare_img_per_s": bare["img_per_s"],
        "ratio": round(throughput["img_per_s"] / bare["img_per_s"], 3),
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
            "tf_threads_per_child": 1,
            "web_workers": args.web_workers,
            "scoring_batch_size": int(os.environ.get("VIGIA_SCORING_BATCH_SIZE", "32")),
            "throughput": throughput,
            "bare": {**bare, "method": "one process, TensorFlow default threads, decode + forward, batches of 32"},
            "latency": latency,
            "queue": queue,
            "worker_children_rss_mb_at_end": [round(x, 1) for x in children_rss],
        },
    }
    write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
