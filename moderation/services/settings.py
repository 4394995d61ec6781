"""Changing the admin's settings: thresholds, batch size, leases, audit sampling, holdout, gate and schedule.

Every change is audited with what it was before and after, thresholds included, so a moved threshold can always be
traced to who moved it and when.
"""

from django.db import transaction

from moderation.models import AuditAction, ModerationSettings
from moderation.selectors.settings import get_settings
from moderation.services import audit


def update_settings(*, values: dict) -> ModerationSettings:
    """Apply `values` (field name -> new value, `thresholds` as a whole dict) to the settings row, audited."""
    with transaction.atomic():
        get_settings()
        row = ModerationSettings.objects.select_for_update().get(pk=1)
        fields = [name for name in values if hasattr(row, name)]
        before = audit.snapshot(row, fields)
        for name in fields:
            setattr(row, name, values[name])
        row.full_clean()
        row.save()
        changed_before, changed_after = audit.changes(before, audit.snapshot(row, fields))
        if changed_after:
            audit.record(action=AuditAction.SETTINGS_CHANGED, obj=row, before=changed_before, after=changed_after)
    return row
