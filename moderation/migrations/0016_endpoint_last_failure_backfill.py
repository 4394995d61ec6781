"""Endpoints already failing when `last_failure_at` arrived get their first failure as its value, so they are
probed too (a probe is due `VIGIA_WEBHOOK_PROBE_SECONDS` after it, i.e. at once for an old failure)."""

from django.db import migrations
from django.db.models import F


def backfill(apps, schema_editor):
    endpoint = apps.get_model("moderation", "WebhookEndpoint")
    endpoint.objects.filter(failing_since__isnull=False, last_failure_at__isnull=True).update(
        last_failure_at=F("failing_since")
    )


class Migration(migrations.Migration):
    dependencies = [("moderation", "0015_endpoint_last_failure")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
