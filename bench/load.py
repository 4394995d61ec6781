"""Load benchmark: Locust against gunicorn with the production settings, API clients and moderators together.

Run: `.venv/bin/python bench/load.py` (make bench-load); `--duration 60` for a short run. It needs PostgreSQL and
Redis (the ones the tests use) and runs against a throwaway database (`vigia_bench_load`) and Redis database 8,
both emptied at the start. The stack is the product's with DEBUG off: gunicorn (`--web-workers`, gthread), a
prefork scoring worker (`scoring,default`, two children), a webhooks worker and beat; the served model is the
fault benchmark's (`tiny` backbone, red prohibited, blue allowed), trained first in this process.

Locust runs headless in a process of its own (`bench/harness/locustfile.py`) with `--api-clients` marketplaces
(50, each its own client and key) posting single-photo listings at `--uploads-per-s` in all (5: under what two
scoring children absorb here) and reading some back, and `--moderators` (8) signed in with sessions, each
opening the queue page, claiming the next item, opening it and deciding it, every 1-3 s.

Throttles: each marketplace is its own client, so the per-client rate (`VIGIA_API_RATE`, 1200/min, the default)
is 100 times what one sends (about 8 requests a minute); moderators count per user. No legitimate client is
throttled; a 429 in the results would say otherwise.

Writes bench/results/load.json: `requests_per_s`; `p50_ms`, `p95_ms`, `p99_ms` and request counts per endpoint;
`errors_5xx` (target 0) and every failure by endpoint; `queue_page_p95_ms` (the queue page under load); and
`consistency_ok`: once the run stops, every accepted image is scored or has been pending for less than the sweep
time, and every decision has its audit entry.
"""

import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness.faults_stack import train_initial_model  # noqa: E402
from bench.harness.report import load_average, log, machine_info, write_results  # noqa: E402
from bench.harness.stack import BIN, Services, api_token, celery_worker, start_from_nothing  # noqa: E402

QUEUE_PAGE = "GET / (queue)"
SWEEP_SECONDS = 120


def parse_args():
    """The command line: users, rates, duration, services, database, broker and output."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (5 minutes)")
    parser.add_argument("--api-clients", type=int, default=50, help="marketplace users, one client each")
    parser.add_argument("--moderators", type=int, default=8, help="moderator users (session sign-in)")
    parser.add_argument("--uploads-per-s", type=float, default=5.0, help="uploads per second, all clients together")
    parser.add_argument("--children", type=int, default=2, help="scoring worker children")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (4 threads each)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vigia_bench_load"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_LOAD_REDIS_URL", "redis://127.0.0.1:6379/8"))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "load.json")
    return parser.parse_args()


def moderators(count: int) -> list[tuple[str, str]]:
    """`count` moderator accounts, made as an operator makes them (`manage.py create_moderator`)."""
    from django.core.management import call_command

    from moderation.models import ModerationSettings
    from moderation.selectors.settings import get_settings

    get_settings()
    # Every flagged photo goes to the queue by its score alone: what the moderators work through.
    ModerationSettings.objects.filter(pk=1).update(audit_rate=0.0)
    accounts = []
    for index in range(count):
        username, password = f"load-moderator-{index}", f"load-pw-{index}-{os.getpid()}-x9"
        call_command("create_moderator", username, "--password", password, stdout=io.StringIO())
        accounts.append((username, password))
    return accounts


def run_locust(args, base: str, work: Path, tokens: list[str], accounts: list[tuple[str, str]]) -> Path:
    """Run Locust headless for `--duration` seconds; returns the prefix of its CSV files."""
    prefix = work / "locust"
    users = args.api_clients + args.moderators
    env = {
        **os.environ,
        "VIGIA_LOAD_TOKENS": ",".join(tokens),
        "VIGIA_LOAD_MODERATORS": ",".join(f"{u}:{p}" for u, p in accounts),
        "VIGIA_LOAD_UPLOADS_PER_S": str(args.uploads_per_s),
        "VIGIA_LOAD_API_CLIENTS": str(args.api_clients),
        "VIGIA_LOAD_MODERATOR_USERS": str(args.moderators),
    }
    argv = [str(BIN / "locust"), "-f", str(REPO / "bench" / "harness" / "locustfile.py"), "--headless"]
    argv += ["-u", str(users), "-r", str(max(1, users // 5)), "-t", f"{int(args.duration)}s", "--host", base]
    argv += ["--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10"]
    with open(work / "logs" / "locust.log", "wb") as output:
        subprocess.run(argv, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, check=False)
    return prefix


def read_stats(prefix: Path) -> dict:
    """Locust's per-endpoint figures and its failures, from its CSV files."""
    with open(f"{prefix}_stats.csv") as handle:
        rows = list(csv.DictReader(handle))
    endpoints, total = {}, None
    for row in rows:
        figures = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": float(row["50%"] or 0),
            "p95_ms": float(row["95%"] or 0),
            "p99_ms": float(row["99%"] or 0),
            "requests_per_s": round(float(row["Requests/s"]), 2),
        }
        if row["Name"] == "Aggregated":
            total = figures
        else:
            endpoints[row["Name"]] = figures
    failures = []
    with open(f"{prefix}_failures.csv") as handle:
        for row in csv.DictReader(handle):
            failures.append({"endpoint": row["Name"], "error": row["Error"][:300], "count": int(row["Occurrences"])})
    return {"endpoints": endpoints, "total": total, "failures": failures}


def errors_5xx(failures: list[dict]) -> int:
    """Failures whose error is a 5xx status (Locust writes `HTTPError('503 Server Error ...`)."""
    import re

    return sum(item["count"] for item in failures if re.search(r"\b5\d\d\b", item["error"]))


def consistency(since: datetime) -> dict:
    """Every accepted image scored, or pending for less than the sweep time; every decision audited."""
    from moderation.models import AuditAction, AuditEntry, Decision, ImageStatus, ListingImage

    now = datetime.now(UTC)
    images = ListingImage.objects.filter(listing__external_id__startswith="load-", listing__created_at__gte=since)
    overdue = images.filter(status=ImageStatus.PENDING, enqueued_at__lt=now - timedelta(seconds=SWEEP_SECONDS))
    failed = images.filter(status=ImageStatus.FAILED).count()
    decisions = {str(pk) for pk in Decision.objects.values_list("pk", flat=True)}
    audited = set(
        AuditEntry.objects.filter(action=AuditAction.DECISION_MADE, object_id__in=decisions).values_list(
            "object_id", flat=True
        )
    )
    report = {
        "accepted_images": images.count(),
        "pending": images.filter(status=ImageStatus.PENDING).count(),
        "pending_past_sweep": overdue.count(),
        "failed": failed,
        "decisions": len(decisions),
        "decisions_without_audit": len(decisions - audited),
    }
    report["ok"] = not (report["pending_past_sweep"] or failed or report["decisions_without_audit"])
    return report


def main() -> int:
    """Start the stack, load it with Locust, check consistency, write the results."""
    args = parse_args()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="vigia-bench-load-"))
    (work / "logs").mkdir()
    start_from_nothing(
        work,
        args.database_url,
        args.redis_url,
        VIGIA_TF_THREADS="1",
        LOG_LEVEL="WARNING",
        VIGIA_BACKBONE="tiny",
        VIGIA_API_RATE="1200/min",
        VIGIA_EMBED_DECISIONS="0",
    )
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    log("training the served model (tiny backbone, red and blue photos)")
    version = train_initial_model(work)
    tokens = [api_token(f"load-market-{index}", client=f"load-market-{index}") for index in range(args.api_clients)]
    accounts = moderators(args.moderators)
    env = {**os.environ}
    services = Services(env, work / "logs")
    try:
        services.start("worker", celery_worker("scoring,default", args.children, "load-scoring@%h", "warning"))
        hooks = celery_worker("webhooks", 4, "load-webhooks@%h", "warning", pool="threads")
        services.start("webhooks", hooks)
        beat = [str(BIN / "celery"), "-A", "moderation", "beat", "-l", "warning"]
        services.start("beat", [*beat, "-S", "django_celery_beat.schedulers:DatabaseScheduler"])
        services.start_web(args.web_workers, "-k", "gthread", "--threads", "4", "--timeout", "120")
        services.wait_healthy(timeout=180)
        started = datetime.now(UTC)
        log(f"load: {args.api_clients} API clients, {args.moderators} moderators, {args.duration:.0f} s")
        began = time.monotonic()
        prefix = run_locust(args, services.base, work, tokens, accounts)
        elapsed = time.monotonic() - began
        services.supervisor.check()
        check = consistency(started)
    finally:
        services.stop()
    stats = read_stats(prefix)
    machine["load_average_at_end"] = load_average()
    endpoints = stats["endpoints"]
    results = {
        "requests_per_s": stats["total"]["requests_per_s"] if stats["total"] else 0.0,
        "p50_ms": {name: figures["p50_ms"] for name, figures in endpoints.items()},
        "p95_ms": {name: figures["p95_ms"] for name, figures in endpoints.items()},
        "p99_ms": {name: figures["p99_ms"] for name, figures in endpoints.items()},
        "errors_5xx": errors_5xx(stats["failures"]),
        # Every failed request (connection errors, 4xx) besides the 5xx; `details.failures` says which.
        "errors_total": sum(item["count"] for item in stats["failures"]),
        "queue_page_p95_ms": endpoints.get(QUEUE_PAGE, {}).get("p95_ms"),
        "consistency_ok": check["ok"],
        "machine": machine,
        "details": {
            "measured_at": started.isoformat(timespec="seconds"),
            "duration_s": round(elapsed, 1),
            "api_clients": args.api_clients,
            "moderators": args.moderators,
            "uploads_per_s": args.uploads_per_s,
            "scoring_children": args.children,
            "web_workers": args.web_workers,
            "model_version": version,
            "throttle": "VIGIA_API_RATE 1200/min per client; each API user is its own client",
            "endpoints": endpoints,
            "failures": stats["failures"],
            "consistency": check,
            "logs": str(work / "logs"),
        },
    }
    write_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
