"""Reads of the audit trail and of decisions as DSA statements of reasons, for the Audit page and its exports."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from moderation.models import AuditEntry, Decision


@dataclass(frozen=True)
class AuditFilter:
    """What the Audit page filters by; every field optional."""

    action: str = ""
    actor: str = ""
    object_type: str = ""
    object_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


def audit_entries(filters: AuditFilter) -> QuerySet:
    """Entries matching `filters`, newest first."""
    rows = AuditEntry.objects.select_related("actor").order_by("-at", "-id")
    if filters.action:
        rows = rows.filter(action=filters.action)
    if filters.actor:
        rows = rows.filter(actor_name=filters.actor)
    if filters.object_type:
        rows = rows.filter(object_type=filters.object_type)
    if filters.object_id:
        rows = rows.filter(object_id=filters.object_id)
    if filters.since is not None:
        rows = rows.filter(at__gte=filters.since)
    if filters.until is not None:
        rows = rows.filter(at__lt=filters.until)
    return rows


def statements_of_reasons(since: datetime | None = None, until: datetime | None = None) -> QuerySet:
    """Decisions with what a DSA statement of reasons needs: the listing, its client, the image and its upload time."""
    rows = Decision.objects.select_related("image__listing__client", "moderator").order_by("created_at", "id")
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows
