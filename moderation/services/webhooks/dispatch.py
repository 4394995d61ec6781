"""What beat runs every few seconds for webhooks: due deliveries handed to the `webhooks` queue, and endpoints that
have failed for too long disabled.

Deliveries are normally sent the moment the relay creates them (it publishes `DELIVER_WEBHOOKS` itself); this is
what sends retries when their time comes, and what repairs a task lost with a broker outage or a worker that died
holding a lease. An endpoint already being worked on (a lease is live) is left to the worker on it, which hands
its own remainder on. An endpoint failing without a single success for `VIGIA_WEBHOOK_DISABLE_AFTER_SECONDS` is
disabled with the reason shown on the desk: retrying a receiver that is gone for good only fills the log.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from moderation import clock, outbox
from moderation.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from moderation.services.webhooks import endpoints


@dataclass
class DispatchResult:
    """Endpoints a delivery task was published for, and endpoints disabled for failing too long."""

    published: list[int] = field(default_factory=list)
    disabled: list[int] = field(default_factory=list)


def span(seconds: float) -> str:
    """A duration for people: "5 days", "36 hours", "90 minutes", "45 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size or (seconds >= size and seconds % size == 0):
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = round(seconds)
    return f"{count} second{'s' if count != 1 else ''}"


def disable_failing_endpoints(*, now: datetime) -> list[int]:
    """Disable every enabled endpoint failing since before the cut-off; returns their ids."""
    limit = settings.VIGIA_WEBHOOK_DISABLE_AFTER_SECONDS
    cutoff = now - timedelta(seconds=limit)
    stale = WebhookEndpoint.objects.filter(is_enabled=True, failing_since__lt=cutoff).values_list("pk", "failing_since")
    disabled = []
    for endpoint_id, failing_since in stale:
        endpoints.disable_endpoint(
            endpoint_id=endpoint_id,
            reason=f"Failing since {failing_since:%Y-%m-%d %H:%M} UTC without a successful delivery "
            f"(disabled after {span(limit)}).",
        )
        disabled.append(endpoint_id)
    return disabled


def endpoints_due(*, now: datetime) -> list[int]:
    """Enabled endpoints with due, unleased pending deliveries and no delivery leased right now."""
    pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, endpoint__is_enabled=True)
    due = set(
        pending.filter(next_attempt_at__lte=now)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .values_list("endpoint_id", flat=True)
        .distinct()
    )
    busy = set(pending.filter(leased_until__gte=now).values_list("endpoint_id", flat=True).distinct())
    return sorted(due - busy)


def dispatch_due() -> DispatchResult:
    """Disable endpoints failing too long, then publish `DELIVER_WEBHOOKS` for every endpoint with work due."""
    now = clock.now()
    result = DispatchResult(disabled=disable_failing_endpoints(now=now))
    result.published = endpoints_due(now=now)
    with transaction.atomic():
        for endpoint_id in result.published:
            outbox.send_on_commit(outbox.DELIVER_WEBHOOKS, endpoint_id)
    return result
