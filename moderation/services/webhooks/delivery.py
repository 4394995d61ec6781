"""Sending an endpoint's due deliveries: in event order, one at a time, each attempt logged, failures retried.

At least once: a delivery stays pending until a 2xx comes back, the retry schedule is exhausted (`failed`) or the
endpoint is disabled (`cancelled`); a worker that dies mid-request leaves a lease that expires, and the delivery is
sent again with the same `webhook-id`. Only 2xx counts; 410 Gone disables the endpoint; 429 is retried when
`Retry-After` says; anything else (another status, a redirect, a timeout, a refused address, a connection error)
is retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h (each +-20%, so retries of many
deliveries do not arrive together), about three days in all, and then given up.

Nothing is held open while a request is in flight: the lease is one UPDATE, the outcome two statements (a
success) or one short transaction (a failure, which changes more) afterwards. On SQLite an open transaction blocks
every writer, and on PostgreSQL a row lock held for up to the request timeout would stall whatever else touches
the row. On PostgreSQL that bookkeeping is committed without waiting for the disk (`synchronous_commit = off`, for
the batch only): flushing it for every event would cap a sender at a couple of hundred events a second, and what a
database crash could lose of it is the last fraction of a second of leases and outcomes, whose deliveries are then
sent again with the same `webhook-id` (at least once, never lost).

A dead receiver must not cost a timeout per queued event. When an attempt fails the batch stops and the endpoint's
other due deliveries wait until the failed one's retry; while the endpoint is failing, new deliveries join that
wait instead of being tried. The first success clears `failing_since` and makes everything waiting due at once, so
a recovered receiver gets its backlog immediately rather than on each delivery's own schedule. The wait is capped:
at most `VIGIA_WEBHOOK_PROBE_SECONDS` after the endpoint's last failed attempt the first waiting delivery is tried
(a probe), since late in the schedule the failed one's retry is hours away and a receiver back meanwhile would
otherwise get nothing until then. A failed probe is logged but keeps the delivery's place in the schedule (its
attempts stay 0, it waits with the others): probes must neither multiply the requests a dead receiver gets (each
probed delivery would start a retry schedule of its own) nor use up the schedules of the deliveries waiting,
which would then be given up days before the endpoint is. A dead receiver costs its failed delivery's retries
and a probe every few minutes. A receiver that throttled with `Retry-After` is not probed before that time, and
while a request to a failing endpoint is in flight no other worker starts one.
"""

import random
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Min, Q, Value
from django.db.models.functions import Coalesce

from moderation import clock, outbox
from moderation.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from moderation.services.webhooks import endpoints, sending, signing

#: Most attempts one task makes before it hands the rest of the endpoint's backlog to a new task.
BATCH_LIMIT = 200
#: Due deliveries read per query; each is then leased on its own.
WINDOW = 25
#: Jitter of every retry delay: +-20%.
JITTER = 0.2
#: A lease outlives the request timeout by this much before another worker may take the delivery.
LEASE_MARGIN = timedelta(seconds=30)
#: The longest a `Retry-After` is honoured for.
MAX_RETRY_AFTER = timedelta(hours=24)


@dataclass
class BatchResult:
    """What one `deliver_due` call did: deliveries sent and delivered, failed attempts, why it stopped."""

    endpoint_id: int
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    stopped: str = ""
    more_due: bool = False


def retry_schedule() -> list[float]:
    """Seconds to wait after the 1st, 2nd, ... failed attempt; after the last one the delivery is `failed`."""
    return [float(seconds) for seconds in settings.VIGIA_WEBHOOK_RETRY_SCHEDULE]


def retry_delay(*, attempts: int) -> timedelta | None:
    """How long to wait after `attempts` failed attempts, with jitter; None when the schedule is exhausted."""
    schedule = retry_schedule()
    if attempts > len(schedule):
        return None
    base = schedule[attempts - 1]
    return timedelta(seconds=base * random.uniform(1 - JITTER, 1 + JITTER))


def _free(now: datetime) -> Q:
    return Q(leased_until__isnull=True) | Q(leased_until__lt=now)


def due_deliveries(*, endpoint_id: int, now: datetime):
    """The endpoint's pending deliveries that are due and not leased, in event position order."""
    return (
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(_free(now))
        .order_by(F("event__position").asc(nulls_first=True), "id")
    )


def _lease(delivery: WebhookDelivery, now: datetime) -> bool:
    until = now + timedelta(seconds=settings.VIGIA_WEBHOOK_TIMEOUT_SECONDS) + LEASE_MARGIN
    taken = (
        WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(_free(now))
        .update(leased_until=until)
    )
    return taken == 1


def _probe_cap(failed_at: datetime | None, until: datetime | None) -> datetime | None:
    """`until`, but no later than the probe interval after the endpoint's last failed attempt `failed_at`."""
    if until is None or failed_at is None:
        return until
    return min(until, failed_at + timedelta(seconds=settings.VIGIA_WEBHOOK_PROBE_SECONDS))


def _hold_until(endpoint: WebhookEndpoint, now: datetime) -> datetime | None:
    """While the endpoint is failing: when its failed deliveries are retried or it is probed, if that is ahead."""
    if endpoint.failing_since is None:
        return None
    retry = WebhookDelivery.objects.filter(
        endpoint_id=endpoint.pk, status=DeliveryStatus.PENDING, attempts__gt=0
    ).aggregate(at=Min("next_attempt_at"))["at"]
    hold = _probe_cap(endpoint.last_failure_at, retry)
    return hold if hold is not None and hold > now else None


def _in_flight(endpoint_id: int, now: datetime) -> bool:
    """Whether a delivery of the endpoint is being sent by a worker right now (its lease is live)."""
    return (
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING)
        .exclude(_free(now))
        .exists()
    )


def _wait_with(*, endpoint_id: int, until: datetime, now: datetime, exclude_id: int | None = None) -> int:
    """Make the endpoint's pending deliveries due before `until` wait until then (not those leased elsewhere)."""
    rows = WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, status=DeliveryStatus.PENDING, next_attempt_at__lt=until
    ).filter(_free(now))
    if exclude_id is not None:
        rows = rows.exclude(pk=exclude_id)
    return rows.update(next_attempt_at=until)


def _next_attempt(delivery: WebhookDelivery, sent: sending.SendResult, now: datetime) -> datetime | None:
    attempts = delivery.attempts + 1
    if sent.status_code == 429 and sent.retry_after is not None:
        # Throttling: honoured, and given up only once the delivery is older than the whole schedule.
        if now - delivery.created_at > timedelta(seconds=sum(retry_schedule())):
            return None
        return now + min(timedelta(seconds=max(1.0, sent.retry_after)), MAX_RETRY_AFTER)
    delay = retry_delay(attempts=attempts)
    return now + delay if delay is not None else None


def _record(
    *, delivery: WebhookDelivery, endpoint: WebhookEndpoint, sent: sending.SendResult, started: datetime
) -> bool:
    """Log the attempt and move the delivery on; returns whether it was delivered."""
    now = clock.now()
    fields = {
        "attempts": delivery.attempts + 1,
        "leased_until": None,
        "last_status_code": sent.status_code,
        "last_error": sent.error[:2000],
    }
    next_at = None
    throttled = sent.status_code == 429 and sent.retry_after is not None
    # A delivery never tried before, tried while the endpoint fails, was tried as a probe (see the module docstring).
    probe = endpoint.failing_since is not None and delivery.attempts == 0 and not throttled
    if sent.ok:
        fields.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif sent.status_code == 410:
        fields.update(status=DeliveryStatus.CANCELLED, next_attempt_at=None)
    elif probe:
        next_at = now + timedelta(seconds=settings.VIGIA_WEBHOOK_PROBE_SECONDS)
        fields.update(attempts=0, next_attempt_at=next_at)
    else:
        next_at = _next_attempt(delivery, sent, now)
        status = DeliveryStatus.PENDING if next_at else DeliveryStatus.FAILED
        fields.update(status=status, next_attempt_at=next_at)
    # A success is two statements on their own: a crash between them leaves an attempt logged and the delivery
    # pending, which is sent again (at least once). A failure changes more rows, together.
    with nullcontext() if sent.ok else transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery_id=delivery.pk,
            attempted_at=started,
            duration_ms=sent.duration_ms,
            status_code=sent.status_code,
            error=sent.error[:2000],
            next_attempt_at=next_at,
        )
        WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(**fields)
        if sent.ok:
            if endpoint.failing_since is not None:
                _recovered(endpoint)
        elif sent.status_code == 410:
            endpoints.disable_endpoint(
                endpoint_id=endpoint.pk, reason=f"The receiver answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC."
            )
        else:
            # A receiver that said when to come back is not probed before then.
            failed_at = None if throttled else now
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                failing_since=Coalesce("failing_since", Value(now)), last_failure_at=failed_at
            )
            endpoint.failing_since = endpoint.failing_since or now
            endpoint.last_failure_at = failed_at
            if next_at is not None:
                until = _probe_cap(failed_at, next_at)
                _wait_with(endpoint_id=endpoint.pk, until=until, now=now, exclude_id=delivery.pk)
    return sent.ok


def _recovered(endpoint: WebhookEndpoint) -> None:
    """A success after failures: the endpoint is healthy again and everything waiting is due now.

    Asked of the database: a batch runs it on its first success after the endpoint was seen failing, and once more
    at its end when its last attempt succeeded, since another worker may have seen the endpoint fail meanwhile.
    """
    endpoint.failing_since = None
    if WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=False).update(failing_since=None):
        endpoints.make_waiting_due(endpoint_id=endpoint.pk)


def _attempt(delivery: WebhookDelivery, endpoint: WebhookEndpoint, secrets: list, body: bytes) -> bool:
    started = clock.now()
    try:
        secrets = signing.still_valid(secrets, started)
        headers = signing.headers(message_id=delivery.event.public_id, body=body, secrets=secrets, timestamp=started)
    except signing.NoSigningSecret as error:
        sent = sending.SendResult(status_code=None, error=str(error), duration_ms=0)
    else:
        sent = sending.post(
            url=endpoint.url, body=body, headers=headers, timeout=settings.VIGIA_WEBHOOK_TIMEOUT_SECONDS
        )
    return _record(delivery=delivery, endpoint=endpoint, sent=sent, started=started)


@contextmanager
def _relaxed_commits():
    """On PostgreSQL, commit this batch's bookkeeping without waiting for the disk (see the module docstring)."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        with suppress(DatabaseError), connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def deliver_due(*, endpoint_id: int, limit: int = BATCH_LIMIT) -> BatchResult:
    """Send the endpoint's due deliveries in event order until none is left, one fails, or `limit` were tried.

    When `limit` is reached with more due, `DELIVER_WEBHOOKS` is published again for the rest.
    """
    with _relaxed_commits():
        return _deliver_due(endpoint_id, limit)


def _deliver_due(endpoint_id: int, limit: int) -> BatchResult:
    result = BatchResult(endpoint_id=endpoint_id)
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None or not endpoint.is_enabled:
        result.stopped = "endpoint disabled or gone"
        return result
    now = clock.now()
    hold = _hold_until(endpoint, now)
    if hold is not None:
        _wait_with(endpoint_id=endpoint_id, until=hold, now=now)
        result.stopped = f"endpoint failing; next try at {hold.isoformat()}"
        return result
    if endpoint.failing_since is not None and _in_flight(endpoint_id, now):
        # One request at a time to a failing endpoint: another worker's retry or probe decides for the rest.
        result.stopped = "endpoint failing; another worker is trying it"
        return result
    # Read once a batch: a secret rotated meanwhile signs from the next batch on (the old one still signs until then).
    secrets = signing.secrets_of(endpoint_id=endpoint_id, at=now)
    while result.attempted < limit:
        now = clock.now()
        window = list(
            due_deliveries(endpoint_id=endpoint_id, now=now).select_related("event__client")[
                : min(WINDOW, limit - result.attempted)
            ]
        )
        if not window:
            break
        # Events never change: their bodies are serialised together, once per attempt.
        bodies = signing.payloads(events=[delivery.event for delivery in window])
        for delivery, body in zip(window, bodies, strict=True):
            if not _lease(delivery, clock.now()):
                continue  # another worker took it
            result.attempted += 1
            if not _attempt(delivery, endpoint, secrets, body):
                result.failed += 1
                result.stopped = f"delivery {delivery.pk} failed"
                return result
            result.delivered += 1
    if result.delivered:
        _recovered(endpoint)
    if result.attempted >= limit and due_deliveries(endpoint_id=endpoint_id, now=clock.now()).exists():
        result.more_due = True
        with transaction.atomic():
            outbox.send_on_commit(outbox.DELIVER_WEBHOOKS, endpoint_id)
    return result
