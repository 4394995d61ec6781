"""A Redis client on the Celery broker, for the desk's own reads and writes next to Celery's messages."""

from django.conf import settings


def broker_client(timeout: float):
    """A client of `CELERY_BROKER_URL` whose connect and socket timeouts are both `timeout` seconds.

    Health checks, the serving report and its readers must never hang on an unreachable Redis, so every client
    the desk makes itself has both timeouts.
    """
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
