"""Admin of clients, their keys, the events sent back to them and the task outbox.

Keys are made here with djangorestframework-api-key's admin, which shows a new key once after saving; only
superusers may add, revoke or delete keys, since a key is a credential that acts as a desk account. Events,
idempotency records and outbox messages are history: read-only.
"""

from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from moderation.models import Client, ClientKey, Event, IdempotencyRecord, OutboxMessage

# The library's own key model is unused: client keys are `ClientKey` rows (below).
admin.site.unregister(APIKey)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: listed and shown, never added, changed or deleted through the admin."""

    def has_add_permission(self, request):
        """Refuse: rows are written by the desk's services."""
        return False

    def has_change_permission(self, request, obj=None):
        """Refuse: history is not edited."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Refuse: history is not deleted."""
        return False


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    """Clients, searchable by name; deactivate one to refuse its keys."""

    list_display = ("name", "is_active", "description", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "description")
    readonly_fields = ("created_at",)

    def has_delete_permission(self, request, obj=None):
        """Refuse: a client owns listings and events; deactivate it instead."""
        return False


@admin.register(ClientKey)
class ClientKeyAdmin(APIKeyModelAdmin):
    """Client API keys: prefix, client, account, state; the key itself is shown once, when it is made."""

    list_display = (*APIKeyModelAdmin.list_display, "client", "user", "last_used_at")
    list_filter = (*APIKeyModelAdmin.list_filter, "client")
    search_fields = (*APIKeyModelAdmin.search_fields, "client__name", "user__username")
    raw_id_fields = ("user",)

    def _superuser(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request):
        """Superusers only."""
        return self._superuser(request)

    def has_change_permission(self, request, obj=None):
        """Superusers only (revoking is a change)."""
        return self._superuser(request)

    def has_delete_permission(self, request, obj=None):
        """Superusers only."""
        return self._superuser(request)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    """Events sent back to clients, in feed order, searchable by external id and type."""

    list_display = ("id", "type", "client", "external_id", "sequence", "position", "occurred_at")
    list_filter = ("type", "client")
    search_fields = ("external_id", "uid")
    list_select_related = ("client",)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    """What each `Idempotency-Key` did, so a retry gets the same answer."""

    list_display = ("key", "client", "listing", "appeal", "created_at")
    search_fields = ("key",)
    list_select_related = ("client",)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    """Tasks written with their transaction; unpublished ones are waiting for the broker to come back."""

    list_display = ("id", "task_name", "created_at", "published_at", "attempts", "last_error")
    list_filter = ("task_name",)
