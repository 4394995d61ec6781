"""A worker busy with a task when its Redis stops and comes back empty: it reconnects and goes on scoring.

Real worker, real Redis of the test's own (stopped and started again on the same port), real PostgreSQL. With
`acks_late` a busy worker always holds an unacknowledged message, and Celery 5.7.0 could exit on losing the
broker then (`moderation/redis_transport.py`), taking its children and their tasks with it. Whether it did
depends on which of the worker's sockets noticed first, so the real-worker test below shows the worker survives
but may not meet that moment; the transport test meets it for sure.
"""

import json
import signal
import time

import pytest

from moderation import outbox
from moderation.models import ImageStatus, ListingImage, OutboxMessage, Score
from tests.support.waiting import wait_until


def test_a_channel_used_after_its_connection_was_closed_raises_a_connection_error(tmp_path):
    from kombu import Connection
    from redis.exceptions import ConnectionError as RedisConnectionError

    from moderation import redis_transport
    from moderation.devstack.redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "redis") as server:
        for url in (server.url, server.url.replace("redis://", "rediss://")):
            assert type(Connection(url).transport) is redis_transport.Transport
        connection = Connection(server.url)
        channel = connection.channel()
        server.stop()
        # What kombu's close of a lost connection leaves for the channels Celery still uses (ack, restore).
        connection.transport.client = None
        channel._disconnect_pools()
        # The way an acknowledgement and the restore of unacknowledged messages reach Redis.
        with pytest.raises(RedisConnectionError) as raised, channel.conn_or_acquire() as client:
            client.ping()
        assert isinstance(raised.value, connection.connection_errors)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_busy_worker_survives_a_redis_restart_and_scores_what_comes_after_once(tmp_path, settings):
    from moderation.devstack.redis import EmbeddedRedis
    from moderation.services.model_versions import sync_models
    from tests.support import workers

    redis_server = EmbeddedRedis(tmp_path / "redis")
    broker_url = redis_server.start()
    faults, marker = tmp_path / "faults.json", tmp_path / "held"
    faults.write_text(json.dumps({"hold_once": str(marker), "hold_seconds": 6}))
    worker = workers.start_worker(
        queues=("scoring", "default"),
        db=0,
        work=tmp_path / "work",
        broker_url=broker_url,
        env={"VIGIA_TEST_FAULTS": str(faults)},
        include=("tests.moderation.worker_faults",),
        name="broker-loss",
    )
    try:
        with workers.publishing_to(worker):
            workers.train_tiny_version(worker.models, tmp_path / "cache")
            workers.wait_ready(worker)
            workers.route_through(worker, settings)
            sync_models()
            first = workers.upload_red("before-restart")
            wait_until(marker.exists, timeout=60, what="the task to reach the model", worker=worker)

            # Redis goes away while the task is unacknowledged, and comes back empty on the same port.
            redis_server.stop()
            time.sleep(3)
            redis_server = EmbeddedRedis(tmp_path / "redis", port=redis_server.port, password=redis_server.password)
            redis_server.start()
            assert worker.process.poll() is None, worker.process.tail()

            # The held task still writes its score (the database did not go away).
            wait_until(
                lambda: ListingImage.objects.get(pk=first.pk).status != ImageStatus.PENDING,
                timeout=60,
                what="the held task to finish",
                worker=worker,
            )
            second = workers.upload_red("after-restart")

            def relayed_and_scored() -> bool:
                outbox.relay_outbox()
                return ListingImage.objects.get(pk=second.pk).status != ImageStatus.PENDING

            OutboxMessage.objects.filter(published_at__isnull=True).update(created_at=first.listing.created_at)
            wait_until(relayed_and_scored, timeout=90, what="an upload after the restart to be scored", worker=worker)
            assert worker.process.poll() is None
            assert Score.objects.filter(image_id__in=[first.pk, second.pk]).count() == 2
    finally:
        worker.process.stop(grace=5, signum=signal.SIGQUIT, group=True)
        redis_server.stop()
