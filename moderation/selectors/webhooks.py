"""Webhook reads for the desk and health: each client's endpoints with their state, one endpoint's delivery log,
the endpoints that need an admin's attention, and counts. Secrets are never read here, only when they were made
and when they expire: the desk shows a secret once, when it is made, and never again."""

from dataclasses import dataclass

from django.db.models import Count, Prefetch, Q, QuerySet

from moderation import clock
from moderation.models import Client, DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookSecret


@dataclass
class ClientEndpoints:
    """A client and its endpoints (each annotated with `pending_count`)."""

    client: Client
    endpoints: list[WebhookEndpoint]


@dataclass
class SecretInfo:
    """What the desk shows of a secret: its id, when it was made and expires, and whether it still signs."""

    pk: int
    created_at: object
    expires_at: object
    signing: bool


def _with_counts(rows: QuerySet) -> QuerySet:
    return rows.annotate(pending_count=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.PENDING)))


def endpoints_by_client() -> list[ClientEndpoints]:
    """Every client with its endpoints (none for some), clients by name."""
    by_client: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in _with_counts(WebhookEndpoint.objects.order_by("id")):
        by_client.setdefault(endpoint.client_id, []).append(endpoint)
    return [ClientEndpoints(client, by_client.get(client.pk, [])) for client in Client.objects.order_by("name")]


def client_endpoints(*, client: Client) -> list[WebhookEndpoint]:
    """One client's endpoints with their pending counts, oldest first: its page links to each."""
    return list(_with_counts(WebhookEndpoint.objects.filter(client=client).order_by("id")))


def get_endpoint(*, endpoint_id: int) -> WebhookEndpoint:
    """One endpoint with its client and pending count (`WebhookEndpoint.DoesNotExist` when there is none)."""
    return _with_counts(WebhookEndpoint.objects.select_related("client")).get(pk=endpoint_id)


def secrets_of(*, endpoint_id: int) -> list[SecretInfo]:
    """The endpoint's secrets newest first, without their values."""
    now = clock.now()
    rows = WebhookSecret.objects.filter(endpoint_id=endpoint_id).order_by("-created_at", "-id")
    return [
        SecretInfo(pk, created, expires, expires is None or expires > now)
        for pk, created, expires in rows.values_list("pk", "created_at", "expires_at")
    ]


def delivery_counts(*, endpoint_id: int) -> dict[str, int]:
    """How many of the endpoint's deliveries are in each status (every status present, zero included)."""
    counts = dict(
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return {status: counts.get(status, 0) for status in DeliveryStatus.values}


def delivery_log(*, endpoint_id: int, status: str | None = None) -> QuerySet:
    """The endpoint's deliveries newest first, each with its event and its attempts (newest first)."""
    rows = WebhookDelivery.objects.filter(endpoint_id=endpoint_id).select_related("event")
    if status:
        rows = rows.filter(status=status)
    attempts = Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("-attempted_at", "-id"))
    return rows.prefetch_related(attempts).order_by("-id")


def endpoints_needing_attention() -> list[WebhookEndpoint]:
    """Disabled endpoints and enabled ones that are failing, failing the longest first."""
    rows = WebhookEndpoint.objects.filter(Q(is_enabled=False) | Q(failing_since__isnull=False)).select_related("client")
    return list(rows.order_by("is_enabled", "failing_since", "id"))


def webhook_counts() -> dict[str, int]:
    """Endpoints enabled, failing (enabled, no success since a failure) and disabled, and pending deliveries."""
    endpoints = WebhookEndpoint.objects.aggregate(
        enabled=Count("id", filter=Q(is_enabled=True)),
        failing=Count("id", filter=Q(is_enabled=True, failing_since__isnull=False)),
        disabled=Count("id", filter=Q(is_enabled=False)),
    )
    pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).count()
    return {**endpoints, "pending_deliveries": pending}
