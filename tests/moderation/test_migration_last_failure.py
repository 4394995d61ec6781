"""Migration 0016: an endpoint already failing when `last_failure_at` arrived gets its first failure there."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("moderation", "0015_endpoint_last_failure")]
AFTER = [("moderation", "0016_endpoint_last_failure_backfill")]


@pytest.mark.django_db(transaction=True)
def test_failing_endpoints_get_their_first_failure_as_the_last_one_and_healthy_ones_nothing():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    client = old.get_model("moderation", "Client").objects.create(name="acme")
    endpoint = old.get_model("moderation", "WebhookEndpoint")
    since = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    failing = endpoint.objects.create(client=client, url="https://down.example.com/", failing_since=since)
    healthy = endpoint.objects.create(client=client, url="https://up.example.com/")

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps.get_model("moderation", "WebhookEndpoint")

    assert new.objects.get(pk=failing.pk).last_failure_at == since
    assert new.objects.get(pk=healthy.pk).last_failure_at is None
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # leave the schema as the other tests expect it
