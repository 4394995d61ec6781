"""Webhook endpoints of clients and every delivery of an event to one, with each attempt's outcome.

Deliveries follow the Standard Webhooks scheme: at least once, the same `webhook-id` on every attempt, retried with
exponential backoff and jitter for about three days. Every attempt is logged (status, duration, error, next try) so
an admin can tell a receiver's 500 from a timeout, a refused address or a signature the receiver rejected.
"""

from django.db import models
from django.db.models import Q


class WebhookEndpoint(models.Model):
    """A URL of a client's that receives its events (all of them, or the types listed)."""

    client = models.ForeignKey("Client", on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, blank=True, help_text="Event types to send; empty: every type.")
    is_enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="First failed attempt since the last success; cleared by a success."
    )
    last_failure_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Latest failed attempt; while the endpoint is failing, the deliveries waiting are tried again "
        "(a probe) at most VIGIA_WEBHOOK_PROBE_SECONDS after it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["client__name", "id"]

    def __str__(self):
        return self.url

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to `event_type`."""
        return not self.event_types or event_type in self.event_types


class WebhookSecret(models.Model):
    """A signing secret of an endpoint (`whsec_...`). During a rotation the old one signs too until it expires."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="secrets")
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"secret {self.pk} of endpoint {self.endpoint_id}"


class DeliveryStatus(models.TextChoices):
    """Pending: to be sent (again) at `next_attempt_at`. Delivered: a 2xx came back. Failed: given up after the
    retry schedule. Cancelled: the endpoint was disabled (410, or failing too long) before it got through."""

    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (retries exhausted)"
    CANCELLED = "cancelled", "Cancelled (endpoint disabled)"


class WebhookDelivery(models.Model):
    """One event on its way to one endpoint. A replay by an admin is a new delivery of the same event."""

    event = models.ForeignKey("Event", on_delete=models.PROTECT, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True, help_text="Held by a worker sending it until then.")
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    is_replay = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["next_attempt_at", "id"], name="delivery_due_idx", condition=Q(status="pending")),
            models.Index(fields=["endpoint", "status"], name="delivery_endpoint_idx"),
        ]

    def __str__(self):
        return f"delivery {self.pk} of event {self.event_id} to {self.endpoint_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try at sending a delivery: when, how long, what came back (or why nothing did) and the next try."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-attempted_at", "-id"]

    def __str__(self):
        return f"attempt {self.pk} of delivery {self.delivery_id}: {self.status_code or self.error[:40]}"
