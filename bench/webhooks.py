"""Webhooks benchmark: events pushed to a marketplace's receiver, measured from outside.

Run: `.venv/bin/python bench/webhooks.py` (make bench-webhooks). It needs PostgreSQL and Redis (the same ones the
tests use) and runs against a throwaway database (`vigia_bench_webhooks`) and Redis database 7, both emptied at the
start. The stack is the product's: gunicorn, a prefork scoring worker (`scoring,default`, which also runs the event
relay), a webhooks worker (threads pool) and beat, with a client whose endpoint is `manage.py webhook_listen` on
loopback (it verifies every signature and records each event with the time it arrived). Writes
bench/results/webhooks.json:

- latency_p50_s / latency_p95_s: upload start to the listing's `image.scored` event verified by the receiver, for
  single-photo listings posted at half the capacity measured just before (target p95 <= 2 s).
- events_per_s: `--events` events of one client written in one transaction, from its commit until the receiver has
  verified them all: relay, signing, one request each (target >= 200/s).
- outage: a stream of `--outage-listings` listings at the same half load; the receiver is stopped once a third of
  them are posted and started again `--outage-seconds` later. Every event of those listings must arrive after the
  recovery: events, received (distinct webhook ids), lost, duplicates (a webhook id that arrived again), and how
  long after the receiver came back the last one arrived (with the default schedule the first retries come after
  5 s and 5 min: `--retry-schedule` shortens it).
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness.report import load_average, log, machine_info, percentile, write_results  # noqa: E402
from bench.harness.stack import (  # noqa: E402
    BIN,
    ONE_CLIENT_API_RATE,
    Services,
    celery_worker,
    marketplace_token,
    scoring_services,
    start_from_nothing,
)
from bench.harness.workload import jpeg_photos, post_paced, train_served_model  # noqa: E402
from moderation.devstack.processes import LoggedProcess, ProcessSpec, start_logged  # noqa: E402
from moderation.devstack.redis import free_tcp_port  # noqa: E402

LATENCY_TARGET_S = 2.0
EVENTS_TARGET_PER_S = 200.0
WEBHOOK_THREADS = 4
#: The most listings the half-load phase posts, whatever the capacity.
LATENCY_MAX_LISTINGS = 2000


def parse_args():
    """The command line: workload sizes, the outage, services, backbone, database, broker and output."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity-listings", type=int, default=300, help="listings posted at full speed first")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="length of the half-load phase")
    parser.add_argument("--events", type=int, default=3000, help="events written at once for the throughput phase")
    parser.add_argument("--outage-listings", type=int, default=1000, help="listings in the outage stream")
    parser.add_argument("--outage-seconds", type=float, default=60.0, help="how long the receiver is down")
    parser.add_argument(
        "--retry-schedule", default="", help="VIGIA_WEBHOOK_RETRY_SCHEDULE for the run (default: the product's)"
    )
    parser.add_argument("--recovery-timeout", type=float, default=900.0, help="give up waiting after the outage")
    parser.add_argument("--children", type=int, default=2, help="scoring worker children (one TensorFlow thread each)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--backbone", default=os.environ.get("VIGIA_BACKBONE", "mobilenet_v1"))
    parser.add_argument("--train-per-class", type=int, default=20, help="training photos per Fashion-MNIST class")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_WEBHOOKS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vigia_bench_webhooks"
        ),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_WEBHOOKS_REDIS_URL", "redis://127.0.0.1:6379/7"))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "webhooks.json")
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------------- receiver


class Receiver:
    """`manage.py webhook_listen` as a process of its own, stopped and started again for the outage, and what it
    recorded: every verified event with the time it arrived (one JSON line each, appended across restarts)."""

    def __init__(self, env: dict[str, str], work: Path, port: int, secret: str):
        self.env = env
        self.port = port
        self.secrets = work / "receiver-secrets"
        self.secrets.write_text(secret + "\n")
        self.record = work / "received.jsonl"
        self.logs = work / "logs"
        self.starts = 0
        self.process: LoggedProcess | None = None

    @property
    def url(self) -> str:
        """The endpoint URL."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        """Start the receiver and wait until it listens."""
        argv = [str(BIN / "python"), str(REPO / "manage.py"), "webhook_listen", "--port", str(self.port)]
        argv += ["--secret-file", str(self.secrets), "--record", str(self.record), "--quiet"]
        self.starts += 1
        spec = ProcessSpec("receiver", argv, self.env, REPO)
        self.process = start_logged(spec, self.logs / f"receiver-{self.starts}.log")
        self.process.wait_for_line("Listening for webhooks", 60)

    def stop(self) -> None:
        """Stop the receiver (its port then refuses connections)."""
        if self.process is not None:
            self.process.stop(grace=5)
            self.process = None

    def events(self) -> list[dict]:
        """Every event recorded so far, in arrival order (a line still being written is left for later)."""
        try:
            text = self.record.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def received_by_id(receiver: Receiver, wanted: set[str]) -> dict[str, list[float]]:
    """Arrival times of each wanted webhook id (several when it arrived more than once)."""
    arrivals: dict[str, list[float]] = {}
    for event in receiver.events():
        if event["id"] in wanted:
            arrivals.setdefault(event["id"], []).append(event["received_at"])
    return arrivals


def wait_received(services: Services, receiver: Receiver, wanted: set[str], timeout: float, what: str) -> dict:
    """Wait until every wanted id has arrived at least once; returns their arrival times."""

    def complete():
        arrivals = received_by_id(receiver, wanted)
        return arrivals if len(arrivals) == len(wanted) else None

    return services.wait_until(complete, timeout, what, interval=0.25)


def scored_event_ids(listing_ids: list[int]) -> dict[int, str]:
    """The webhook id of each listing's (first) `image.scored` event, once it exists."""
    from moderation.models import Event, EventType

    rows = Event.objects.filter(listing_id__in=listing_ids, type=EventType.IMAGE_SCORED).order_by("id")
    ids: dict[int, str] = {}
    for event in rows.only("uid", "listing_id"):
        ids.setdefault(event.listing_id, event.public_id)
    return ids


def wait_scored_events(services: Services, listing_ids: list[int], timeout: float) -> dict[int, str]:
    """Wait until every listing has its `image.scored` event; returns their webhook ids by listing."""
    return services.wait_until(
        lambda: (ids := scored_event_ids(listing_ids)) and len(ids) == len(listing_ids) and ids,
        timeout,
        "every listing's image.scored event",
    )


# ---------------------------------------------------------------------------------------------------- phases


def scored_latency(services: Services, receiver: Receiver, token: str, photos: list[bytes], rate, prefix) -> dict:
    """Post single-photo listings (`rate` per second, or at full speed when None) and time each upload's start to
    its `image.scored` event arriving at the receiver."""
    answers = post_paced(services.base, token, [[photo] for photo in photos], prefix, rate)
    starts = {body["id"]: started for started, body in answers}
    ids = wait_scored_events(services, list(starts), timeout=600)
    arrivals = wait_received(services, receiver, set(ids.values()), 600, f"{prefix}: every image.scored received")
    latencies = [arrivals[ids[listing]][0] - started for listing, started in starts.items()]
    first_start = min(starts.values())
    last_arrival = max(times[0] for times in arrivals.values())
    return {
        "listings": len(latencies),
        "rate_per_s": round(rate, 2) if rate else None,
        "listings_per_s": round(len(latencies) / (last_arrival - first_start), 2),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3),
    }


def throughput(services: Services, receiver: Receiver, count: int) -> dict:
    """Write `count` events of the benchmark's client in one transaction; time from the commit to the last arrival."""
    from django.db import transaction

    from moderation.models import Client, EventType, Listing
    from moderation.services.events import emit

    client = Client.objects.get(name="bench")
    listings = Listing.objects.bulk_create(
        [Listing(client=client, external_id=f"events-{index}", title="events") for index in range(max(1, count // 20))]
    )
    with transaction.atomic():
        made = [
            emit(type=EventType.LISTING_STATUS_CHANGED, listing=listings[i % len(listings)], data={"n": i})
            for i in range(count)
        ]
    committed = time.time()
    arrivals = wait_received(services, receiver, {e.public_id for e in made}, 600, "every event of the burst")
    seconds = max(times[0] for times in arrivals.values()) - committed
    return {"events": count, "seconds": round(seconds, 3), "events_per_s": round(count / seconds, 1)}


def outage(args, services: Services, receiver: Receiver, token: str, photos: list[bytes], rate: float) -> dict:
    """A stream of listings with the receiver down for `--outage-seconds` from a third of the way in."""
    from moderation.models import DeliveryAttempt, DeliveryStatus, Event, Listing, WebhookDelivery

    posted = threading.Event()
    outcome: dict = {}

    def stream():
        try:
            outcome["answers"] = post_paced(services.base, token, [[photo] for photo in photos], "outage", rate)
        finally:
            posted.set()

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    third = args.outage_listings // 3
    services.wait_until(
        lambda: Listing.objects.filter(external_id__startswith="outage-").count() >= third, 600, "a third of the stream"
    )
    receiver.stop()
    down_at = time.time()
    log(f"receiver stopped after {third} listings; down for {args.outage_seconds:.0f} s")
    time.sleep(args.outage_seconds)
    receiver.start()
    up_at = time.time()
    log("receiver back; waiting for every event of the stream")
    posted.wait()
    sender.join()
    listing_ids = [body["id"] for _, body in outcome["answers"]]
    wait_scored_events(services, listing_ids, timeout=600)

    def settled() -> bool:
        events = Event.objects.filter(listing_id__in=listing_ids)
        pending = WebhookDelivery.objects.filter(event__in=events, status=DeliveryStatus.PENDING).exists()
        return not pending and not events.filter(position__isnull=True).exists()

    services.wait_until(settled, args.recovery_timeout, "every delivery of the stream to settle", interval=1.0)
    events = Event.objects.filter(listing_id__in=listing_ids)
    wanted = {event.public_id for event in events.only("uid")}
    arrivals = received_by_id(receiver, wanted)
    lines = sum(len(times) for times in arrivals.values())
    last = max((max(times) for times in arrivals.values()), default=up_at)
    return {
        "listings": len(listing_ids),
        "events": len(wanted),
        "received": len(arrivals),
        "lost": len(wanted) - len(arrivals),
        "duplicates": lines - len(arrivals),
        "outage_s": round(up_at - down_at, 1),
        "recovered_after_s": round(last - up_at, 1),
        "failed_deliveries": WebhookDelivery.objects.filter(event__in=events, status=DeliveryStatus.FAILED).count(),
        "failed_attempts": DeliveryAttempt.objects.filter(delivery__event__in=events)
        .exclude(status_code__gte=200, status_code__lt=300)
        .count(),
    }


# ---------------------------------------------------------------------------------------------------- main


def main() -> int:
    """Run every phase against a fresh stack and write the results file."""
    args = parse_args()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-webhooks-"))
    extra = {"VIGIA_WEBHOOK_RETRY_SCHEDULE": args.retry_schedule} if args.retry_schedule else {}
    env = start_from_nothing(
        work,
        args.database_url,
        args.redis_url,
        VIGIA_TF_THREADS="1",
        LOG_LEVEL="WARNING",
        VIGIA_WEBHOOK_ALLOW_HTTP="1",
        VIGIA_WEBHOOK_ALLOW_LOOPBACK="1",
        VIGIA_API_RATE=ONE_CLIENT_API_RATE,
        **extra,
    )
    from django.conf import settings

    from moderation.models import Client
    from moderation.services.model_versions import sync_models
    from moderation.services.webhooks.endpoints import add_endpoint

    log(f"training the served model ({args.backbone}, {args.train_per_class} photos per class)")
    version = train_served_model(work, args.backbone, args.train_per_class)
    sync_models()
    token = marketplace_token()
    photos = jpeg_photos("test", 16 + args.capacity_listings + LATENCY_MAX_LISTINGS + args.outage_listings)
    warmup, photos = photos[:16], photos[16:]
    capacity_photos, photos = photos[: args.capacity_listings], photos[args.capacity_listings :]
    latency_photos, outage_photos = photos[:LATENCY_MAX_LISTINGS], photos[LATENCY_MAX_LISTINGS:]

    port = free_tcp_port()
    bench_client = Client.objects.get(name="bench")
    endpoint, secret = add_endpoint(client=bench_client, url=f"http://127.0.0.1:{port}/", description="bench")
    receiver = Receiver(env, work, port, secret)
    services = scoring_services(env, work / "logs", args.children, args.web_workers)
    try:
        hooks_env = {**env, "VIGIA_PRELOAD_TENSORFLOW": "0"}
        webhooks = celery_worker("webhooks", WEBHOOK_THREADS, "bench-webhooks@%h", "warning", pool="threads")
        services.supervisor.start_logged(ProcessSpec("webhooks", webhooks, hooks_env, REPO), work / "logs/webhooks.log")
        beat = [str(BIN / "celery"), "-A", "moderation", "beat", "-l", "warning"]
        services.start("beat", [*beat, "-S", "django_celery_beat.schedulers:DatabaseScheduler"])
        receiver.start()
        services.wait_healthy(timeout=180)
        log("services up; warming up")
        scored_latency(services, receiver, token, warmup, None, "warm")

        log(f"capacity: {len(capacity_photos)} single-photo listings at full speed")
        capacity = scored_latency(services, receiver, token, capacity_photos, None, "cap")
        rate = capacity["listings_per_s"] / 2
        count = max(10, min(len(latency_photos), int(rate * args.latency_seconds)))
        log(f"capacity {capacity['listings_per_s']} listings/s; latency: {count} listings at {rate:.1f}/s")
        latency = scored_latency(services, receiver, token, latency_photos[:count], rate, "lat")
        log(f"upload to image.scored received: p50 {latency['p50_s']} s, p95 {latency['p95_s']} s")

        log(f"throughput: {args.events} events written at once")
        burst = throughput(services, receiver, args.events)
        log(f"{burst['events_per_s']} events/s")

        log(f"outage: {args.outage_listings} listings at {rate:.1f}/s")
        down = outage(args, services, receiver, token, outage_photos[: args.outage_listings], rate)
        log(f"outage: {down}")
    finally:
        receiver.stop()
        services.stop()

    machine["load_average_at_end"] = load_average()
    results = {
        "latency_p50_s": latency["p50_s"],
        "latency_p95_s": latency["p95_s"],
        "latency_target_p95_s": LATENCY_TARGET_S,
        "events_per_s": burst["events_per_s"],
        "events_per_s_target": EVENTS_TARGET_PER_S,
        "outage": down,
        "machine": machine,
        "details": {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "backbone": args.backbone,
            "model_version": version,
            "worker_children": args.children,
            "web_workers": args.web_workers,
            "webhook_worker_threads": WEBHOOK_THREADS,
            "endpoint_id": endpoint.pk,
            "retry_schedule_s": settings.VIGIA_WEBHOOK_RETRY_SCHEDULE,
            "capacity": capacity,
            "latency": latency,
            "throughput": burst,
            "timings_from": "upload start (latency), the burst's commit (throughput); arrival is when the receiver "
            "verified the request",
        },
    }
    write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
