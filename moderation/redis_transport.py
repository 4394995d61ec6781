"""Kombu's Redis transport, with a closed connection failing as a connection error rather than `AttributeError`.

When the broker goes away, Celery 5.7.0 collects the connection (its transport drops the client) and then still
uses channels of that connection: closing it restores unacknowledged messages through them, and a task that ends
after the loss acknowledges its message through them. Kombu 5.7.0 then builds a Redis pool from the dropped
client and raises `AttributeError` (`'NoneType' object has no attribute 'hostname'`), which is no connection
error, so the worker treats it as unrecoverable and exits with its children and their tasks. With `acks_late`
a busy worker always has such a message, so a Redis restart took busy workers down (`bench/faults.py` found it
in the scoring and the webhooks worker). Here the same moment raises redis-py's `ConnectionError`, which Celery
and kombu handle as the connection loss it is: the acknowledgement is logged as impossible (the message is
redelivered or, with an empty Redis, swept from the database) and the worker reconnects.

`install()` makes this the transport of `redis://` and `rediss://` URLs; `moderation.celery` calls it before
the app makes any connection.
"""

from kombu import transport
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

TRANSPORT = "moderation.redis_transport:Transport"


class Channel(kombu_redis.Channel):
    """Kombu's Redis channel; used after its connection was collected, it raises a connection error."""

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was lost and closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    """Kombu's Redis transport with the channel above."""

    Channel = Channel


def install() -> None:
    """Serve `redis://` and `rediss://` broker URLs with this transport."""
    transport.TRANSPORT_ALIASES["redis"] = TRANSPORT
    transport.TRANSPORT_ALIASES["rediss"] = TRANSPORT
