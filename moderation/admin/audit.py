"""The audit trail in the admin: filtered by action, actor and time, never added to, changed or deleted here.

The desk's Audit page (`/audit/`) shows the same entries and exports them as CSV.
"""

from django.contrib import admin

from moderation.admin.base import ReadOnlyAdmin
from moderation.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Audit entries, newest first."""

    list_display = ("at", "actor_name", "action", "object_type", "object_id", "ip", "request_id")
    list_filter = ("action", "object_type", "at")
    search_fields = ("actor_name", "object_id", "request_id", "note")
    date_hierarchy = "at"
