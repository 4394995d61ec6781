"""The worker's consumer retries a lost broker every few seconds (`moderation.consumer`), on a real connection."""

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.utils.imports import symbol_by_name

from moderation.consumer import RECONNECT_INTERVALS, Consumer, with_reconnect_intervals
from moderation.devstack.redis import free_tcp_port


def retries_against_a_dead_broker(conn, **kwargs) -> list[float]:
    waits: list[float] = []
    with pytest.raises(OperationalError, match="Connection refused"):
        conn.ensure_connection(lambda exc, interval: waits.append(interval), max_retries=4, **kwargs)
    return waits


def test_the_retries_follow_the_given_intervals_on_a_broker_that_refuses():
    conn = with_reconnect_intervals(
        Connection(f"redis://127.0.0.1:{free_tcp_port()}/0"),
        {"interval_start": 0.01, "interval_step": 0.01, "interval_max": 0.02},
    )
    assert retries_against_a_dead_broker(conn) == pytest.approx([0.01, 0.02, 0.02, 0.02])


def test_a_callers_own_intervals_win():
    conn = with_reconnect_intervals(Connection(f"redis://127.0.0.1:{free_tcp_port()}/0"))
    waits = retries_against_a_dead_broker(conn, interval_start=0, interval_step=0.01, interval_max=0.01)
    assert waits == pytest.approx([0, 0.01, 0.01, 0.01])


def test_the_desks_workers_use_this_consumer_with_a_wait_of_at_most_five_seconds():
    from moderation.celery import app

    assert symbol_by_name(app.conf.worker_consumer) is Consumer
    assert RECONNECT_INTERVALS["interval_max"] == 5.0
    assert RECONNECT_INTERVALS["interval_start"] < 2  # kombu's own first retry waits 2 s, its last 30 s
    # At that pace Celery's default of 100 attempts would give up (and the worker exit) after about 8 minutes.
    assert app.conf.broker_connection_max_retries is None


def test_celerys_own_reconnect_path_waits_the_consumers_intervals(monkeypatch, caplog):
    from celery import Celery

    # Celery's consumer, as its blueprint calls it after a broker loss, on an app that gives up after 3 retries.
    monkeypatch.setitem(RECONNECT_INTERVALS, "interval_start", 0.01)
    monkeypatch.setitem(RECONNECT_INTERVALS, "interval_step", 0.01)
    monkeypatch.setitem(RECONNECT_INTERVALS, "interval_max", 0.02)
    app = Celery("reconnect-test", set_as_current=False)
    app.conf.broker_connection_max_retries = 3
    app.conf.broker_connection_retry_on_startup = True
    consumer = Consumer.__new__(Consumer)
    consumer.app, consumer.first_connection_attempt, consumer.broker_connection_retry_attempt = app, False, 0

    with pytest.raises(OperationalError, match="Connection refused"):
        consumer.ensure_connected(Connection(f"redis://127.0.0.1:{free_tcp_port()}/0"))

    retries = [record.getMessage() for record in caplog.records if "Trying again" in record.getMessage()]
    # Celery says a wait under a second as "now"; kombu's own first wait would read "in 2.00 seconds".
    assert len(retries) == 3 and all("Trying again now" in message for message in retries)
    assert "(3/3)" in retries[-1]
