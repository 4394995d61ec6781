"""A PostgreSQL restart must not leave web or worker processes holding dead connections (`CONN_HEALTH_CHECKS`).

A persistent connection (`CONN_MAX_AGE`) that the server dropped is only noticed when a query fails on it. With
health checks on, Django pings a reused connection once per request (or task) before its first query and opens a
new one if the ping fails, so the first request after a restart is answered instead of failing with a 500.
"""

import psycopg
import pytest
from django.db import close_old_connections, connection

from moderation.models import Listing

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def drop_from_the_server_side(pid: int) -> None:
    """End one backend as a server restart would (another connection, as the superuser)."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_connection_the_server_dropped_is_replaced_at_the_next_request():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    assert connection.settings_dict["CONN_MAX_AGE"] > 0, "a persistent connection is what a restart leaves dead"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    drop_from_the_server_side(pid)

    # What Django does when a request (or, through Celery's Django fixup, a task) starts and ends.
    close_old_connections()
    assert Listing.objects.count() == 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid
