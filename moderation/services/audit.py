"""Writing the audit trail: one entry per audited action, in the transaction of the change it records.

Services call `record` as they make a change, so an entry exists exactly when the change does (a rolled-back
change leaves no entry). The actor is the one given, else the current request's user, else the system; the
request id and address come from `moderation.requestcontext`.
"""

from django.db import models

from moderation import clock
from moderation.models import AuditEntry
from moderation.requestcontext import client_ip, current_request, request_id, request_user

SYSTEM = "system"


def snapshot(instance: models.Model, fields) -> dict:
    """The values of `fields` of `instance`, for an entry's before or after."""
    return {name: getattr(instance, name) for name in fields}


def changes(before: dict, after: dict) -> tuple[dict, dict]:
    """Only what differs between two snapshots, as (before, after)."""
    keys = [key for key in after if before.get(key) != after.get(key)]
    return {key: before.get(key) for key in keys}, {key: after[key] for key in keys}


def record(
    *,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    before: dict | None = None,
    after: dict | None = None,
    note: str = "",
    actor=None,
    actor_name: str = "",
) -> AuditEntry:
    """Append one entry: `action` on `obj` (or on `object_type`/`object_id`), with what changed and why."""
    actor = actor if actor is not None else request_user()
    if actor is not None and not getattr(actor, "pk", None):
        actor = None
    return AuditEntry.objects.create(
        at=clock.now(),
        actor=actor,
        actor_name=actor_name or (actor.get_username() if actor is not None else SYSTEM),
        action=action,
        object_type=object_type or (obj._meta.model_name if obj is not None else ""),
        object_id=object_id or (str(obj.pk) if obj is not None else ""),
        before=before,
        after=after,
        note=note[:2000],
        request_id=request_id(),
        ip=client_ip(current_request()),
    )
