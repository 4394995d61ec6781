"""Health: can the desk take listings and score them right now? Each dependency is checked with a short timeout.

A health check that hangs is worse than one that says "no", so every probe is bounded: the worker ping waits
`timeout` seconds at most and Redis is asked with socket timeouts of the same length.
"""

from dataclasses import dataclass, field

from django.db import connection

from moderation.broker import broker_client
from moderation.models import ImageStatus, ListingImage
from moderation.selectors.models import active_model
from moderation.selectors.serving import ServingReport, serving_report
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

    def as_dict(self) -> dict:
        """Return the JSON body of the health endpoint (`serializers.HealthSerializer`)."""
        data = {"status": "ok" if self.ok else "unavailable", **self.checks}
        if self.serving is not None:
            data["serving"] = self.serving
        if self.webhooks is not None:
            data["webhooks"] = self.webhooks
        return data


def check_database() -> dict:
    """Run a trivial query and count pending images, which shows a scoring backlog at a glance."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
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
    """Ping the Celery workers and wait `timeout` seconds for replies; ok when at least one answers."""
    from moderation.celery import app

    try:
        replies = app.control.inspect(timeout=timeout).ping() or {}
    except Exception as error:  # an unreachable broker means no worker can be reached either
        return {"ok": False, "count": 0, "detail": f"{type(error).__name__}: {error}"}
    if not replies:
        return {"ok": False, "count": 0, "detail": f"No worker answered a ping within {timeout} s."}
    return {"ok": True, "count": len(replies), "names": sorted(replies)}


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


def check_health(timeout: float = 1.0) -> Health:
    """Database, Redis, workers and the active model, each ok or not; plus what each scoring process serves and
    the state of webhook endpoints."""
    health = Health()
    health.checks["database"] = check_database()
    health.checks["redis"] = check_redis(timeout)
    if health.checks["redis"]["ok"]:
        health.checks["workers"] = check_workers(timeout)
    else:
        health.checks["workers"] = {"ok": False, "count": 0, "detail": "Redis is unreachable."}
    health.checks["model"] = check_model()
    if health.checks["redis"]["ok"]:
        health.serving = serving(timeout)
    else:
        health.serving = ServingReport(error="Redis is unreachable.").as_dict()
    health.webhooks = webhooks()
    return health
