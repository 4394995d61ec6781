"""Health: is the process up, can the desk take listings and score them right now, and what do operators see?

Three levels, for three callers. Liveness depends on nothing (a load balancer restarts a process that stops
answering, not one whose database is down). Readiness asks the database, Redis, the scoring workers and the
active model, and nothing that takes time: the workers are read from the reports they write to Redis every few
seconds (`selectors.serving`), never by broadcasting a ping that would hold a web worker for its whole timeout.
The full report adds the backlog, what each scoring process serves and the webhook endpoints. A health check
that hangs is worse than one that says "no", so Redis is asked with socket timeouts of `timeout` seconds.
"""

from dataclasses import dataclass, field

from django.db import connection

from moderation.broker import broker_client
from moderation.models import ImageStatus, ListingImage
from moderation.selectors.models import active_model
from moderation.selectors.serving import (
    SERVING_HEARTBEAT_SECONDS,
    STALE_AFTER_HEARTBEATS,
    ServingReport,
    serving_report,
    serving_workers,
)
from moderation.selectors.webhooks import webhook_counts


@dataclass
class Health:
    """The result of every check, by name, and the serving report; what `/api/health` answers."""

    checks: dict[str, dict] = field(default_factory=dict)
    # Which version each scoring process serves: information for operators, not a check. A rollout in progress
    # or a lagging worker must not take the desk out of a load balancer.
    serving: dict | None = None
    # Webhook endpoints and the deliveries waiting for them: information too. A marketplace's receiver being down is
    # its problem to fix, not a reason to stop taking its listings.
    webhooks: dict | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed; the serving report does not count."""
        return all(check["ok"] for check in self.checks.values())

    @property
    def status(self) -> str:
        """The one word an anonymous caller gets: "ok" or "unavailable"."""
        return "ok" if self.ok else "unavailable"

    def as_dict(self) -> dict:
        """Return the JSON body of the health endpoint (`serializers.HealthSerializer`)."""
        data = {"status": self.status, **self.checks}
        if self.serving is not None:
            data["serving"] = self.serving
        if self.webhooks is not None:
            data["webhooks"] = self.webhooks
        return data


def check_database(*, count_backlog: bool = True) -> dict:
    """Run a trivial query and, for the full report, count pending images: the scoring backlog at a glance.

    Readiness skips the count: on a large table it is the one part of a probe that grows with the data.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        if not count_backlog:
            return {"ok": True}
        pending = ListingImage.objects.filter(status=ImageStatus.PENDING).count()
    except Exception as error:  # any database failure is reported, not raised
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}
    return {"ok": True, "pending_images": pending}


def check_redis(timeout: float) -> dict:
    """Ping the broker with socket timeouts of `timeout` seconds."""
    try:
        client = broker_client(timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:  # any broker failure is reported, not raised
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}
    return {"ok": True}


def check_workers(timeout: float) -> dict:
    """Count the scoring processes that reported recently (`vigia:serving`); ok when at least one did.

    Reading their reports costs one Redis round trip; a broadcast ping would wait its whole timeout on every
    probe. A scoring child reports when it starts and every few seconds after, so a stopped worker drops out
    within three heartbeats.
    """
    try:
        workers = serving_workers(timeout=timeout)
    except Exception as error:  # an unreachable broker means no report can be read either
        return {"ok": False, "count": 0, "detail": f"{type(error).__name__}: {error}"}
    if not workers:
        window = STALE_AFTER_HEARTBEATS * SERVING_HEARTBEAT_SECONDS
        return {"ok": False, "count": 0, "detail": f"No scoring worker has reported in the last {window:.0f} s."}
    return {"ok": True, "count": len(workers), "names": sorted({worker.node or worker.name for worker in workers})}


def check_model() -> dict:
    """Report the active model version; without one, images are stored but never scored."""
    try:
        active = active_model()
    except Exception as error:  # reported by the database check as well
        return {"ok": False, "version": None, "detail": f"{type(error).__name__}: {error}"}
    if active is None:
        return {"ok": False, "version": None, "detail": "No model is active; images wait in pending."}
    return {"ok": True, "version": active.version}


def serving(timeout: float) -> dict:
    """`selectors.serving.serving_report` as JSON; a failure is described, never raised."""
    try:
        return serving_report(timeout=timeout).as_dict()
    except Exception as error:  # the database check reports a broken database; this stays informative
        return ServingReport(error=f"{type(error).__name__}: {error}").as_dict()


def webhooks() -> dict:
    """Endpoints enabled, failing and disabled, and pending deliveries; a failure is described, never raised."""
    try:
        return webhook_counts()
    except Exception as error:  # the database check reports a broken database; this stays informative
        return {"error": f"{type(error).__name__}: {error}"}


def check_readiness(timeout: float = 1.0, *, count_backlog: bool = False) -> Health:
    """Database, Redis, scoring workers and the active model, each ok or not: can the desk do its job now?"""
    health = Health()
    health.checks["database"] = check_database(count_backlog=count_backlog)
    health.checks["redis"] = check_redis(timeout)
    if health.checks["redis"]["ok"]:
        health.checks["workers"] = check_workers(timeout)
    else:
        health.checks["workers"] = {"ok": False, "count": 0, "detail": "Redis is unreachable."}
    health.checks["model"] = check_model()
    return health


def check_health(timeout: float = 1.0) -> Health:
    """The readiness checks with the backlog, plus what each scoring process serves and the state of webhook
    endpoints: the operators' report."""
    health = check_readiness(timeout, count_backlog=True)
    if health.checks["redis"]["ok"]:
        health.serving = serving(timeout)
    else:
        health.serving = ServingReport(error="Redis is unreachable.").as_dict()
    health.webhooks = webhooks()
    return health
