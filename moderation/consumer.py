"""The worker's consumer: it reconnects to a broker that came back within seconds, not half a minute.

Celery's consumer reconnects through kombu's `Connection.ensure_connection` with kombu's default back-off: the
first retry after 2 s, each later one 2 s longer, up to 30 s apart. A worker therefore goes on waiting for up to
30 s after Redis is back, and scores nothing meanwhile: after a 30 s outage its next attempt came 12 s after the
restart, and images uploaded after it waited 11.7 s at p95 against 0.04 s otherwise (`make bench-faults`). Here
the attempts start 1 s apart and grow by 1 s up to `RECONNECT_INTERVALS["interval_max"]`: an attempt against a
broker that is still down costs one refused connection, so the wait after a repair is at most that long.

`CELERY_WORKER_CONSUMER` names this class, so every worker the desk starts uses it, and
`CELERY_BROKER_CONNECTION_MAX_RETRIES = None` keeps it trying however long the broker is down: at this pace
Celery's default of 100 attempts would give up after about 8 minutes, and a worker that gives up exits.
"""

from celery.worker.consumer import Consumer as CeleryConsumer

#: Keyword arguments of kombu's `ensure_connection`: seconds before the first retry, added per retry, at most.
RECONNECT_INTERVALS = {"interval_start": 1.0, "interval_step": 1.0, "interval_max": 5.0}


def with_reconnect_intervals(conn, intervals: dict[str, float] = RECONNECT_INTERVALS):
    """`conn` with its `ensure_connection` retrying at `intervals` unless a caller passes its own."""
    original = conn.ensure_connection

    def ensure_connection(*args, **kwargs):
        for key, value in intervals.items():
            kwargs.setdefault(key, value)
        return original(*args, **kwargs)

    conn.ensure_connection = ensure_connection
    return conn


class Consumer(CeleryConsumer):
    """Celery's consumer, connecting (at start and after every broker loss) with the shorter back-off above."""

    def ensure_connected(self, conn):
        return super().ensure_connected(with_reconnect_intervals(conn))
