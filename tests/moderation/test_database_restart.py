"""A PostgreSQL restart must not leave web processes holding dead connections (`CONN_HEALTH_CHECKS`).

A persistent connection (`CONN_MAX_AGE`) that the server dropped is only noticed when a query fails on it. With
health checks on, Django pings a reused connection once per request before its first query and opens a new one
if the ping fails, so the first request after a restart is answered instead of failing with a 500. (Celery
workers close their connections after every task, through Celery's Django fixup.) A request that does meet the
database gone answers 503 JSON, not a 500.
"""

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import close_old_connections, connection
from rest_framework.test import APIClient

from moderation.models import Listing
from tests.support.factories import make_api_key

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


def test_an_api_request_that_finds_the_database_gone_answers_503_json_with_retry_after():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(get_user_model().objects.create_user('api'))}")
    assert client.get("/api/v1/listings").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        drop_from_the_server_side(cursor.fetchone()[0])
    # The test client does not run the per-request health check: the request meets the dead connection.
    response = client.get("/api/v1/listings")
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "database_unavailable"
    assert response["Retry-After"] == "5"
    close_old_connections()
    assert client.get("/api/v1/listings").status_code == 200
