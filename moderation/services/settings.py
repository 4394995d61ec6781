"""Changing the admin's settings: thresholds, batch size, leases, audit sampling, holdout, gate and schedule.

Every change is audited with what it was before and after, thresholds included, so a moved threshold can always be
traced to who moved it and when. A changed precision or recall target recalibrates the active model's thresholds
at once (labels pinned by hand keep theirs), so the targets on the page are the ones the thresholds meet.
"""

from django.db import transaction

from moderation.models import AuditAction, ModerationSettings
from moderation.selectors.models import active_model
from moderation.selectors.settings import get_settings
from moderation.services import audit
from moderation.services.calibration import recalibrate

TARGETS = ("precision_target", "recall_target")


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
        active = active_model()
        if active is not None and any(name in changed_after for name in TARGETS):
            row = recalibrate(version=active.version, reason="The precision or recall target changed.")
    return row
