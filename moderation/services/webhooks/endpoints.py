"""What admins do with webhook endpoints: add one, rotate its secret, disable or enable it, replay, send a test.

A secret is shown once, when it is made (the desk must keep it to sign, but never shows it again). Rotation
never cuts a receiver off: the old secrets keep signing beside the new one until the overlap ends, so the
receiver can switch at its own pace. Disabling an endpoint (an admin, a 410, or failing too long) cancels what
was still pending for it; enabling it again starts from a clean slate, and a replay sends an event again with
the same `webhook-id` so a receiver that already had it can tell. Every change of an endpoint (added, secret
rotated, disabled by an admin or by the desk, enabled) is written to the audit trail; a secret never is.
"""

from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import Q

from moderation import clock, outbox
from moderation.models import (
    AuditAction,
    Client,
    DeliveryStatus,
    Event,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from moderation.services import audit
from moderation.services.webhooks import addresses, signing

#: Event types an endpoint may subscribe to; test events go only where an admin sends them.
SUBSCRIBABLE = [value for value in EventType.values if value != EventType.TEST]
DEFAULT_OVERLAP = timedelta(hours=24)


class WebhookError(ValueError):
    """A webhook change that cannot be made as asked; the message says why."""


def clean_event_types(event_types: Iterable[str]) -> list[str]:
    """The event types as stored (sorted, no repeats); unknown ones raise `WebhookError`. Empty means every type."""
    chosen = sorted({str(value).strip() for value in event_types if str(value).strip()})
    unknown = [value for value in chosen if value not in SUBSCRIBABLE]
    if unknown:
        raise WebhookError(f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(SUBSCRIBABLE)}.")
    return chosen


def check_url(*, url: str) -> str:
    """The URL, stripped, if an endpoint may be saved with it; otherwise `WebhookError` with the reason."""
    try:
        addresses.check_url(url=url)
    except addresses.DestinationError as error:
        raise WebhookError(str(error)) from None
    if len(url.strip()) > WebhookEndpoint._meta.get_field("url").max_length:
        raise WebhookError("The URL is too long.")
    return url.strip()


def add_endpoint(
    *, client: Client, url: str, event_types: Iterable[str] = (), description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint of `client` with its first secret; returns both (the secret is never shown again)."""
    clean_url = check_url(url=url)
    types = clean_event_types(event_types)
    secret = signing.new_secret()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            client=client, url=clean_url, event_types=types, description=description.strip()[:200]
        )
        WebhookSecret.objects.create(endpoint=endpoint, secret=secret)
        audit.record(action=AuditAction.WEBHOOK_CREATED, obj=endpoint, after=_described(endpoint))
    return endpoint, secret


def _described(endpoint: WebhookEndpoint) -> dict:
    return {
        "client": endpoint.client.name,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
    }


def rotate_secret(*, endpoint_id: int, overlap: timedelta = DEFAULT_OVERLAP) -> str:
    """A new secret for the endpoint; the others expire after `overlap` (sooner if they already would)."""
    if overlap < timedelta(0):
        raise WebhookError("The overlap cannot be negative.")
    now = clock.now()
    secret = signing.new_secret()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        WebhookSecret.objects.filter(endpoint=endpoint).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now + overlap)
        ).update(expires_at=now + overlap)
        WebhookSecret.objects.create(endpoint=endpoint, secret=secret)
        audit.record(
            action=AuditAction.WEBHOOK_CHANGED,
            obj=endpoint,
            after={"secret_rotated": True, "old_secrets_expire_at": (now + overlap).isoformat()},
            note="Signing secret rotated.",
        )
    return secret


def disable_endpoint(*, endpoint_id: int, reason: str) -> WebhookEndpoint:
    """Stop sending to the endpoint and cancel what is pending for it; the reason is shown on the desk."""
    now = clock.now()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if endpoint.is_enabled:
            endpoint.is_enabled = False
            endpoint.disabled_at = now
            endpoint.disabled_reason = reason
            endpoint.save(update_fields=["is_enabled", "disabled_at", "disabled_reason"])
            audit.record(
                action=AuditAction.WEBHOOK_CHANGED,
                obj=endpoint,
                before={"is_enabled": True},
                after={"is_enabled": False},
                note=reason,
            )
        WebhookDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.CANCELLED, next_attempt_at=None, leased_until=None
        )
    return endpoint


def enable_endpoint(*, endpoint_id: int) -> WebhookEndpoint:
    """Send to the endpoint again from now on, with its failing state cleared (cancelled deliveries stay so)."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if not endpoint.is_enabled:
            audit.record(
                action=AuditAction.WEBHOOK_CHANGED,
                obj=endpoint,
                before={"is_enabled": False, "disabled_reason": endpoint.disabled_reason},
                after={"is_enabled": True},
            )
        endpoint.is_enabled = True
        endpoint.disabled_at = None
        endpoint.disabled_reason = ""
        endpoint.failing_since = None
        endpoint.save(update_fields=["is_enabled", "disabled_at", "disabled_reason", "failing_since"])
    return endpoint


def make_waiting_due(*, endpoint_id: int) -> int:
    """Make every pending delivery of the endpoint that waits for a later retry due now; returns how many."""
    now = clock.now()
    return WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, status=DeliveryStatus.PENDING, next_attempt_at__gt=now
    ).update(next_attempt_at=now)


def _queue(*, event: Event, endpoint: WebhookEndpoint, is_replay: bool) -> WebhookDelivery:
    if not endpoint.is_enabled:
        raise WebhookError(f"Endpoint {endpoint.pk} is disabled; enable it first.")
    if event.client_id != endpoint.client_id:
        raise WebhookError("The event belongs to another client than the endpoint.")
    delivery = WebhookDelivery.objects.create(
        event=event, endpoint=endpoint, next_attempt_at=clock.now(), is_replay=is_replay
    )
    if endpoint.failing_since is not None:
        # An admin checking a failing receiver wants to know now, not at its next scheduled retry.
        make_waiting_due(endpoint_id=endpoint.pk)
    outbox.send_on_commit(outbox.DELIVER_WEBHOOKS, endpoint.pk)
    return delivery


def replay(
    *, delivery_id: int | None = None, event_id: int | None = None, endpoint_id: int | None = None
) -> WebhookDelivery:
    """Send an event again as a new delivery (`is_replay`), with the same `webhook-id`.

    Give a `delivery_id` (its event, to its endpoint unless `endpoint_id` names another of the client's), or an
    `event_id` and an `endpoint_id`.
    """
    with transaction.atomic():
        if delivery_id is not None:
            original = WebhookDelivery.objects.select_related("event").get(pk=delivery_id)
            event, endpoint_id = original.event, endpoint_id or original.endpoint_id
        elif event_id is not None and endpoint_id is not None:
            event = Event.objects.get(pk=event_id)
        else:
            raise WebhookError("Name a delivery, or an event and an endpoint, to replay.")
        endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
        return _queue(event=event, endpoint=endpoint, is_replay=True)


def send_test_event(*, endpoint_id: int) -> WebhookDelivery:
    """A `test` event of the endpoint's client, on no listing, delivered to this endpoint only (never the feed)."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_related("client").get(pk=endpoint_id)
        if not endpoint.is_enabled:
            raise WebhookError(f"Endpoint {endpoint.pk} is disabled; enable it first.")
        event = Event.objects.create(
            type=EventType.TEST,
            client=endpoint.client,
            occurred_at=clock.now(),
            data={"endpoint_id": endpoint.pk, "message": "A test event sent from the Vigia desk."},
        )
        return _queue(event=event, endpoint=endpoint, is_replay=False)
