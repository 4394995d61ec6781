"""Fault benchmark: the desk's real processes, a stream of API uploads, and one part broken at a time.

Run: `.venv/bin/python bench/faults.py` (make bench-faults), `--quick` for a short smoke run, `--only NAME` (repeat
it) for some faults. Nothing is mocked. The run starts its own Redis (the embedded server, its own port and
password), its own PostgreSQL (`initdb` into a temporary directory, its own port), and MEDIA_ROOT on a small tmpfs
of its own, then what `make run` starts with the production settings (DEBUG off): gunicorn, a prefork scoring
worker (`scoring,default`, two children), a training worker, a webhooks worker (threads) and beat, plus
`manage.py webhook_listen` as the marketplace's webhook receiver. The served model is trained first with the
`tiny` backbone on red (prohibited) and blue (allowed) photos: the faults are about the pipeline, not the model.

Each fault runs with single-photo listings posted at `--rate` per second, before, during and after it:

- `redis`: Redis stopped for `--outage-seconds` (30) and started again empty (no persistence): queued messages,
  results and rate-limit counts are gone; the outbox relay and the sweeper must rebuild what is due.
- `postgres`: PostgreSQL stopped (fast shutdown) for `--pg-down-seconds` and started again.
- `scoring_child`: the busiest scoring child SIGKILLed while images are leased (mid-batch).
- `training_worker`: a retrain requested, its child SIGKILLed mid-training; then another retrain must run.
- `disk_full`: the media tmpfs filled to the last byte for `--outage-seconds`, then emptied.
- `webhook_receiver`: the receiver stopped for `--outage-seconds`, then started again.

Per fault, in bench/results/faults.json: `accepted` (uploads answered 201), `lost` (accepted images with no row or
no stored file, plus for the receiver fault events never received), `scored_twice` (images with more than one
scored event for one model version), `stuck` (accepted images still pending or failed, or deliveries still
pending, once recovered), `recovery_s` (from the repair to the moment every accepted image was scored, and for the
receiver every event received; for the scoring child from the kill; for the training worker from the kill until
the killed run was marked failed, the queue free for the next one). `recovery_s` is checked once the stream after
the repair is over, so its floor is `--phase-seconds`; `backlog_s` is the code's own figure, from the stack's
timestamps: from the repair (or the kill) until the last image uploaded before it was scored, and for the
receiver the last event recorded before it was first received; `after_repair_p95_s` is how long those created
after it took, upload to scoring (`bench.harness.recovery`). The uploads refused meanwhile are counted by status
in each fault's details: a refused upload is the marketplace's to send again (the API says so).
"""

import argparse
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness.faults_stack import (  # noqa: E402
    MediaDisk,
    PrivatePostgres,
    UploadStream,
    start_services,
    train_initial_model,
)
from bench.harness.recovery import backlog_figures  # noqa: E402
from bench.harness.report import load_average, log, machine_info, write_results  # noqa: E402
from bench.harness.stack import ONE_CLIENT_API_RATE, Services, marketplace_token, start_from_nothing  # noqa: E402
from moderation.devstack.redis import EmbeddedRedis, free_tcp_port  # noqa: E402

FAULTS = ("redis", "postgres", "scoring_child", "training_worker", "disk_full", "webhook_receiver")


def parse_args():
    """The command line: which faults, how long, how fast the stream, where the results go."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=FAULTS, help="run only this fault (repeatable)")
    parser.add_argument("--quick", action="store_true", help="short outages and phases: a smoke run, not figures")
    parser.add_argument("--rate", type=float, default=4.0, help="uploads per second during each fault")
    parser.add_argument("--outage-seconds", type=float, default=None, help="Redis, disk and receiver down (30)")
    parser.add_argument("--pg-down-seconds", type=float, default=None, help="PostgreSQL down (10)")
    parser.add_argument("--phase-seconds", type=float, default=None, help="stream before and after a fault (20)")
    parser.add_argument("--sweep-seconds", type=int, default=None, help="VIGIA_PENDING_SWEEP_SECONDS (120)")
    parser.add_argument("--recovery-timeout", type=float, default=600.0, help="give up waiting after a fault")
    parser.add_argument("--children", type=int, default=2, help="scoring worker children")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "faults.json")
    args = parser.parse_args()
    quick = args.quick
    args.outage_seconds = args.outage_seconds or (8.0 if quick else 30.0)
    args.pg_down_seconds = args.pg_down_seconds or (4.0 if quick else 10.0)
    args.phase_seconds = args.phase_seconds or (4.0 if quick else 20.0)
    args.sweep_seconds = args.sweep_seconds or (20 if quick else 120)
    args.faults = args.only or list(FAULTS)
    return args


class Bench:
    """The stack the faults break, and how each fault is judged."""

    def __init__(self, args, work: Path, services: Services, pg, redis, disk, receiver, token: str):
        self.args, self.work, self.services = args, work, services
        self.pg, self.redis, self.disk, self.receiver, self.token = pg, redis, disk, receiver, token
        self.seed = 0

    # ---------------------------------------------------------------- helpers

    def stream(self, name: str) -> UploadStream:
        """Start a stream of uploads named after the fault."""
        self.seed += 1_000_000
        return UploadStream(self.services.base, self.token, name, self.args.rate, seed=self.seed).start()

    def reconnect(self) -> None:
        """Drop this process's database connection (it may be one PostgreSQL dropped)."""
        from django.db import connection

        connection.close()

    def done(self, image_ids: list[int]) -> bool:
        """Whether none of these images is pending any more."""
        from moderation.models import ImageStatus, ListingImage

        self.reconnect_if_broken()
        return not ListingImage.objects.filter(pk__in=image_ids, status=ImageStatus.PENDING).exists()

    def reconnect_if_broken(self) -> None:
        """Replace a connection the server dropped, as a web request would (CONN_HEALTH_CHECKS)."""
        from django.db import close_old_connections

        close_old_connections()

    def wait_recovered(self, image_ids: list[int], since: float, extra=None) -> float | None:
        """Seconds from `since` until every image is scored (and `extra()` holds), None after the timeout."""
        deadline = time.monotonic() + self.args.recovery_timeout
        while time.monotonic() < deadline:
            self.services.supervisor.check()
            try:
                if self.done(image_ids) and (extra is None or extra()):
                    return round(time.time() - since, 1)
            except Exception as error:  # noqa: BLE001 - the database may still be coming back
                log(f"waiting: {type(error).__name__}: {error}")
                self.reconnect()
            time.sleep(0.5)
        return None

    def judge(self, name: str, answers, recovery_s, details: dict | None = None, lost_extra: int = 0, stuck_extra=0):
        """The fault's figures from the database: accepted, lost, scored twice, stuck, and what was refused."""
        from django.db.models import Count

        from moderation.models import Event, EventType, ImageStatus, ListingImage

        accepted = [answer for answer in answers if answer.status in (200, 201)]
        image_ids = [pk for answer in accepted for pk in answer.images]
        rows = {image.pk: image for image in ListingImage.objects.filter(pk__in=image_ids)}
        media = Path(os.environ["MEDIA_ROOT"])
        missing_file = [pk for pk, image in rows.items() if not (media / image.file.name).is_file()]
        lost = len(set(image_ids) - set(rows)) + len(missing_file) + lost_extra
        twice = (
            Event.objects.filter(type__in=[EventType.IMAGE_SCORED, EventType.IMAGE_RESCORED])
            .filter(data__image_id__in=image_ids)
            .values("data__image_id", "data__model_version")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .count()
        )
        stuck = sum(1 for image in rows.values() if image.status in (ImageStatus.PENDING, ImageStatus.FAILED))
        refused: dict[str, int] = {}
        for answer in answers:
            if answer.status not in (200, 201):
                refused[str(answer.status)] = refused.get(str(answer.status), 0) + 1
        result = {
            "name": name,
            "accepted": len(accepted),
            "lost": lost,
            "scored_twice": twice,
            "stuck": stuck + stuck_extra,
            "recovery_s": recovery_s,
            "details": {"posted": len(answers), "refused_by_status": refused, **(details or {})},
        }
        log(f"{name}: { ({k: v for k, v in result.items() if k != 'details'}) } refused {refused}")
        return result

    def around(self, name: str, fault) -> dict:
        """Stream, run `fault()` (which returns when the repair was made and details), stream on, then judge."""
        log(f"fault {name}: streaming {self.args.rate}/s")
        stream = self.stream(name)
        time.sleep(self.args.phase_seconds)
        repaired_at, details = fault()
        time.sleep(self.args.phase_seconds)
        answers = stream.stop()
        self.reconnect_if_broken()
        accepted = [pk for answer in answers if answer.status in (200, 201) for pk in answer.images]
        recovery = self.wait_recovered(accepted, repaired_at, details.pop("until", None))
        # A fault that is over before the stream is (the training run) says itself how long it took.
        recovery = details.pop("recovery_s", recovery)
        result = self.judge(name, answers, recovery, details, details.pop("lost", 0), details.pop("stuck", 0))
        if name == "webhook_receiver":
            catch_up = {"of": "webhook events", **backlog_figures(self.event_times(), repaired_at)}
        else:
            catch_up = {"of": "images", **backlog_figures(self.image_times(accepted), repaired_at)}
        result["backlog_s"] = catch_up["backlog_s"]
        result["after_repair_p95_s"] = catch_up["after_repair_p95_s"]
        result["details"]["catch_up"] = catch_up
        log(f"{name}: caught up {catch_up}")
        return result

    def image_times(self, image_ids: list[int]) -> list[tuple[float, float | None]]:
        """Each accepted image's upload and scoring, as the web process and the worker recorded them.

        `scored_at` is the latest scoring; an image is scored once per model version and the served model does not
        change during a fault, so it is the first (the `scored_twice` count would show otherwise).
        """
        from moderation.models import ListingImage

        rows = ListingImage.objects.filter(pk__in=image_ids).values_list("created_at", "scored_at")
        return [(created.timestamp(), scored.timestamp() if scored else None) for created, scored in rows]

    def event_times(self) -> list[tuple[float, float | None]]:
        """Each event of the receiver fault's stream: when the desk recorded it, when the receiver first got it."""
        from bench.webhooks import received_by_id
        from moderation.models import Event

        events = list(
            Event.objects.filter(listing__external_id__startswith="webhook_receiver-").only("uid", "occurred_at")
        )
        arrivals = received_by_id(self.receiver, {event.public_id for event in events})
        return [
            (event.occurred_at.timestamp(), min(arrivals[event.public_id]) if event.public_id in arrivals else None)
            for event in events
        ]

    # ---------------------------------------------------------------- faults

    def redis_fault(self):
        """Redis stopped, then started again empty on the same port with the same password."""
        self.redis.stop()
        log(f"redis stopped for {self.args.outage_seconds:.0f} s")
        time.sleep(self.args.outage_seconds)
        self.redis.start()
        log("redis started again, empty")
        return time.time(), {"outage_s": self.args.outage_seconds}

    def postgres_fault(self):
        """PostgreSQL stopped (fast shutdown), then started again."""
        self.pg.stop()
        log(f"postgres stopped for {self.args.pg_down_seconds:.0f} s")
        time.sleep(self.args.pg_down_seconds)
        self.pg.start()
        self.reconnect()
        log("postgres started again")
        return time.time(), {"outage_s": self.args.pg_down_seconds}

    def scoring_child_fault(self):
        """SIGKILL the busiest scoring child at a moment when images are leased (a batch in flight)."""
        import psutil

        from moderation.models import ImageStatus, ListingImage

        worker = psutil.Process(self.services["worker"].pid)
        children = worker.children()
        before = {child.pid: sum(child.cpu_times()[:2]) for child in children}
        deadline = time.monotonic() + 30
        leased = 0
        while time.monotonic() < deadline:
            leased = ListingImage.objects.filter(status=ImageStatus.PENDING).exclude(scoring_lease_key="").count()
            if leased:
                break
            time.sleep(0.01)
        busiest = max(children, key=lambda child: sum(child.cpu_times()[:2]) - before[child.pid])
        os.kill(busiest.pid, signal.SIGKILL)
        log(f"scoring child {busiest.pid} killed with {leased} images leased")
        return time.time(), {"killed_pid": busiest.pid, "leased_at_kill": leased}

    def training_worker_fault(self):
        """A retrain requested; its child SIGKILLed once it trains; then a second retrain must run to its end."""
        from moderation.models import TrainingRun, TrainingRunStatus, TrainingTrigger
        from moderation.services.training.trigger import request_training

        run = request_training(trigger=TrainingTrigger.MANUAL)

        def training():
            current = TrainingRun.objects.get(pk=run.pk)
            return current.phase in ("cross-validating", "training") and current.metrics.get("worker", {}).get("pid")

        pid = self.services.wait_until(training, 300, "the retrain to reach training", interval=0.1)
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        log(f"training child {pid} killed mid-run (run {run.pk})")
        ended = {TrainingRunStatus.FAILED, TrainingRunStatus.SUCCEEDED, TrainingRunStatus.REJECTED}
        self.services.wait_until(
            lambda: TrainingRun.objects.get(pk=run.pk).status in ended, 300, "the killed run to end", interval=0.5
        )
        killed_run = TrainingRun.objects.get(pk=run.pk)
        failed_after = round(time.time() - killed, 1)
        second = request_training(trigger=TrainingTrigger.MANUAL)
        self.services.wait_until(
            lambda: TrainingRun.objects.get(pk=second.pk).status in ended, 600, "the next retrain", interval=0.5
        )
        second = TrainingRun.objects.get(pk=second.pk)
        log(f"killed run {killed_run.status} after {failed_after} s; next run {second.status}")
        stuck = TrainingRun.objects.filter(status__in=[TrainingRunStatus.RUNNING, TrainingRunStatus.QUEUED]).count()
        return killed, {
            # Until the killed run was marked failed and the training queue was free for the next run.
            "recovery_s": failed_after,
            "killed_run_status": killed_run.status,
            "killed_run_reason": killed_run.reason[:300],
            "killed_run_ended_after_s": failed_after,
            "next_run_status": second.status,
            "stuck": stuck + (killed_run.status == TrainingRunStatus.SUCCEEDED),
        }

    def disk_full_fault(self):
        """The media tmpfs filled to its last byte, then emptied."""
        size = self.disk.fill()
        log(f"media disk full ({size / 2**20:.0f} MiB filler) for {self.args.outage_seconds:.0f} s")
        time.sleep(self.args.outage_seconds)
        self.disk.free()
        log("media disk emptied")
        return time.time(), {"media": f"tmpfs of {self.disk.size}, filled by one file"}

    def webhook_receiver_fault(self):
        """The marketplace's receiver stopped, then started again; every event must arrive after it."""
        from bench.webhooks import received_by_id

        self.receiver.stop()
        log(f"webhook receiver stopped for {self.args.outage_seconds:.0f} s")
        time.sleep(self.args.outage_seconds)
        self.receiver.start()
        log("webhook receiver started again")
        state: dict = {}

        def all_received() -> bool:
            from moderation.models import DeliveryStatus, Event, WebhookDelivery

            events = Event.objects.filter(listing__external_id__startswith="webhook_receiver-")
            if events.filter(position__isnull=True).exists():
                return False
            if WebhookDelivery.objects.filter(event__in=events, status=DeliveryStatus.PENDING).exists():
                return False
            wanted = {event.public_id for event in events.only("uid")}
            arrivals = received_by_id(self.receiver, wanted)
            state.update(wanted=len(wanted), received=len(arrivals))
            state["duplicates"] = sum(len(times) for times in arrivals.values()) - len(arrivals)
            return len(arrivals) == len(wanted)

        return time.time(), {"until": all_received, "receiver": state}

    def run(self, name: str) -> dict:
        """One fault, judged; a fault the machine cannot stage is reported as skipped."""
        if name == "disk_full" and not self.disk.mounted:
            log(f"disk_full skipped: {self.disk.why_not}")
            return {"name": name, "skipped": self.disk.why_not}
        result = self.around(name, getattr(self, f"{name}_fault"))
        if name == "webhook_receiver":
            receiver = result["details"].get("receiver", {})
            result["lost"] += max(0, receiver.get("wanted", 0) - receiver.get("received", 0))
        return result


def main() -> int:
    """Start the private stack, run each fault with a stream of uploads, write the results."""
    args = parse_args()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-faults-"))
    pg = PrivatePostgres(free_tcp_port())
    redis = EmbeddedRedis(work / "redis")
    disk = MediaDisk(work / "media")
    services = receiver = None
    results = []
    try:
        pg.init()
        pg.start()
        redis.start()
        media = f"tmpfs of {disk.size}" if disk.mount() else f"a plain directory ({disk.why_not})"
        env = start_from_nothing(
            work,
            pg.url("vigia_faults"),
            redis.url,
            VIGIA_TF_THREADS="1",
            LOG_LEVEL="WARNING",
            VIGIA_BACKBONE="tiny",
            VIGIA_PENDING_SWEEP_SECONDS=str(args.sweep_seconds),
            VIGIA_WEBHOOK_ALLOW_HTTP="1",
            VIGIA_WEBHOOK_ALLOW_LOOPBACK="1",
            VIGIA_WEBHOOK_RETRY_SCHEDULE="2,4,8,15,30,60,120",
            VIGIA_API_RATE=ONE_CLIENT_API_RATE,
            VIGIA_EMBED_DECISIONS="0",
        )
        from bench.webhooks import Receiver
        from moderation.models import Client
        from moderation.services.webhooks.endpoints import add_endpoint

        log("training the served model (tiny backbone, red and blue photos)")
        version = train_initial_model(work)
        token = marketplace_token()
        port = free_tcp_port()
        client = Client.objects.get(name="bench")
        _, secret = add_endpoint(client=client, url=f"http://127.0.0.1:{port}/", description="faults")
        receiver = Receiver(env, work, port, secret)
        receiver.start()
        services = start_services(args, env, work)
        bench = Bench(args, work, services, pg, redis, disk, receiver, token)
        warm = bench.stream("warmup")
        time.sleep(3)
        warm_ids = [pk for answer in warm.stop() if answer.status == 201 for pk in answer.images]
        if not warm_ids or bench.wait_recovered(warm_ids, time.time()) is None:
            raise SystemExit(f"the stack did not score its warm-up uploads; logs in {work / 'logs'}")
        log(f"stack up (model {version}); faults: {', '.join(args.faults)}")
        for name in args.faults:
            results.append(bench.run(name))
    finally:
        if receiver is not None:
            receiver.stop()
        if services is not None:
            services.stop()
        redis.stop()
        pg.remove()
        disk.unmount()
    machine["load_average_at_end"] = load_average()
    write_results(
        args.output,
        {
            "faults": results,
            "machine": machine,
            "details": {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "rate_per_s": args.rate,
                "outage_s": args.outage_seconds,
                "postgres_down_s": args.pg_down_seconds,
                "phase_s": args.phase_seconds,
                "sweep_s": args.sweep_seconds,
                "scoring_children": args.children,
                "web_workers": args.web_workers,
                "media": media,
                "logs": str(work / "logs"),
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
