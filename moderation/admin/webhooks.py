"""Admin of webhook delivery: endpoints, their secrets (never the value), deliveries and attempts, all read-only.

Endpoints are added, rotated, enabled and disabled on the desk's webhook pages, where the secret is shown once and
the change is audited; deliveries and attempts are the history a marketplace's engineer asks about, so nobody
edits them here.
"""

from django.contrib import admin

from moderation.admin.base import ReadOnlyAdmin
from moderation.models import DeliveryAttempt, WebhookDelivery, WebhookEndpoint, WebhookSecret


class WebhookSecretInline(admin.TabularInline):
    """An endpoint's secrets: when made and when they expire, never their value."""

    model = WebhookSecret
    extra = 0
    can_delete = False
    fields = ("id", "created_at", "expires_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        """Refuse: secrets are made (and shown once) on the desk's webhook pages."""
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    """Webhook endpoints, read-only: added, rotated, enabled and disabled on the desk's webhook pages."""

    list_display = ("id", "client", "url", "is_enabled", "failing_since", "disabled_at", "created_at")
    list_filter = ("is_enabled", "client")
    search_fields = ("url", "description", "client__name")
    list_select_related = ("client",)
    fields = (
        "client",
        "url",
        "description",
        "event_types",
        "is_enabled",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "created_at",
    )
    readonly_fields = fields
    inlines = [WebhookSecretInline]


@admin.register(WebhookSecret)
class WebhookSecretAdmin(ReadOnlyAdmin):
    """Signing secrets, read-only and without their value: only when they were made and expire."""

    list_display = ("id", "endpoint", "created_at", "expires_at")
    list_select_related = ("endpoint",)
    fields = ("endpoint", "created_at", "expires_at")
    readonly_fields = fields


class DeliveryAttemptInline(admin.TabularInline):
    """A delivery's attempts, newest first: when, how long, what came back, the next try."""

    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("attempted_at", "duration_ms", "status_code", "error", "next_attempt_at")
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Webhook deliveries, read-only history; replays are made on the desk's endpoint page."""

    list_display = ("id", "event", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at", "is_replay")
    list_filter = ("status", "is_replay")
    search_fields = ("event__uid", "endpoint__url", "last_error")
    list_select_related = ("event", "endpoint")
    raw_id_fields = ("event", "endpoint")
    inlines = [DeliveryAttemptInline]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdmin):
    """Every attempt at sending a webhook, read-only history."""

    list_display = ("id", "delivery", "attempted_at", "duration_ms", "status_code", "error", "next_attempt_at")
    list_filter = ("status_code",)
    search_fields = ("error",)
    list_select_related = ("delivery",)
    raw_id_fields = ("delivery",)
