"""The task outbox: a task is written with the transaction that needs it and sent after the commit; a broker outage
never fails a committed request or deletes what it stored, and the relay sends what was not sent once Redis is back."""

import signal
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from moderation import outbox
from moderation.models import ImageStatus, ListingImage, OutboxMessage, Score
from tests.support import images
from tests.support.factories import make_api_key
from tests.support.waiting import wait_until


def broker_down(monkeypatch):
    from moderation.celery import app

    def refuse(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", refuse)


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_task_and_a_committed_one_is_sent_once(monkeypatch):
    sent = []
    monkeypatch.setattr("moderation.celery.app.send_task", lambda name, args: sent.append((name, args)))
    with pytest.raises(RuntimeError), transaction.atomic():
        outbox.send_on_commit(outbox.SCORE_IMAGES, [1, 2])
        raise RuntimeError("the change fails")
    assert not OutboxMessage.objects.exists() and sent == []
    with transaction.atomic():
        outbox.send_on_commit(outbox.SCORE_IMAGES, [3])
        outbox.send_once_on_commit(outbox.RELAY_EVENTS)
        outbox.send_once_on_commit(outbox.RELAY_EVENTS)
    assert sent == [(outbox.SCORE_IMAGES, [[3]]), (outbox.RELAY_EVENTS, [])]
    assert OutboxMessage.objects.filter(published_at__isnull=False).count() == 2
    assert outbox.relay_outbox() == 0


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_broker_fails_nothing_and_the_relay_sends_the_task_once_it_is_back(media_root, monkeypatch):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(get_user_model().objects.create_user('api'))}")
    broker_down(monkeypatch)
    response = client.post(
        "/api/v1/listings", {"external_id": "ad-1", "images": [images.upload(images.jpeg_bytes())]}, format="multipart"
    )
    assert response.status_code == 201, response.content
    image = ListingImage.objects.get()
    assert image.file.storage.exists(image.file.name)  # the stored photo is kept
    message = OutboxMessage.objects.get(task_name=outbox.SCORE_IMAGES)
    assert message.published_at is None and message.attempts == 1 and message.args == [[image.pk]]

    monkeypatch.undo()
    sent = []
    monkeypatch.setattr("moderation.celery.app.send_task", lambda name, args: sent.append((name, args)))
    # A message is left alone for a moment (its own commit is publishing it); then the relay sends it.
    assert outbox.relay_outbox() == 0
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(seconds=5))
    assert outbox.relay_outbox() == 1
    assert sent == [(outbox.SCORE_IMAGES, [[image.pk]])]
    assert outbox.relay_outbox() == 0


@pytest.mark.worker
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_redis_stopped_during_an_upload_then_restarted_empty_loses_nothing(tmp_path, settings, monkeypatch):
    """A real Redis of the test's own is stopped, an upload comes in (201, files kept), Redis comes back empty, and
    once the relay has run (what beat does every few seconds) the image is scored, once, by a real worker. Calls
    of `/api/v1/score` fail with 503 while Redis is down and are answered again once it is back."""
    from moderation.devstack.redis import EmbeddedRedis
    from tests.support import workers

    redis_server = EmbeddedRedis(tmp_path / "redis")
    broker_url = redis_server.start()
    worker = workers.start_worker(
        queues=("scoring", "default"), db=0, work=tmp_path / "work", broker_url=broker_url, name="outage"
    )
    try:
        with workers.publishing_to(worker):
            workers.train_tiny_version(worker.models, tmp_path / "cache")
            workers.wait_ready(worker)
            settings.MEDIA_ROOT = worker.media
            settings.VIGIA_MODEL_REGISTRY = worker.models
            from moderation.services.model_versions import sync_models

            sync_models()
            key = make_api_key(get_user_model().objects.create_user("api"))
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
            photo = images.noisy_png(images.PROHIBITED_COLOR, seed=5)
            settings.VIGIA_SCORE_TIMEOUT_SECONDS = 5

            def score_call() -> int:
                return client.post("/api/v1/score", {"image": images.upload(photo)}, format="multipart").status_code

            wait_until(lambda: score_call() == 200, timeout=60, what="a /score call to be answered")
            redis_server.stop()
            # While Redis is down a call fails at once with a 503, and the upload below is still accepted.
            assert score_call() == 503
            response = client.post(
                "/api/v1/listings",
                {"external_id": "during-outage", "images": [images.upload(photo, name="p.png")]},
                format="multipart",
            )
            assert response.status_code == 201, response.content
            image = ListingImage.objects.get()
            assert image.file.storage.exists(image.file.name)
            assert OutboxMessage.objects.filter(published_at__isnull=True, task_name=outbox.SCORE_IMAGES).exists()

            # Redis comes back on the same port with nothing in it; the worker reconnects by itself.
            redis_server = EmbeddedRedis(tmp_path / "redis", port=redis_server.port, password=redis_server.password)
            redis_server.start()
            OutboxMessage.objects.update(created_at=timezone.now() - timedelta(seconds=5))

            def relayed_and_scored() -> bool:
                outbox.relay_outbox()
                return ListingImage.objects.get(pk=image.pk).status != ImageStatus.PENDING

            wait_until(
                relayed_and_scored, timeout=90, what="the upload to be scored after Redis came back", worker=worker
            )
            assert Score.objects.filter(image=image).count() == 1

            # What the worker wrote meanwhile (the events relay) is sent by itself or, if its publish met the
            # reconnecting broker, by the relay: nothing stays unpublished.
            def all_published() -> bool:
                outbox.relay_outbox()
                return not OutboxMessage.objects.filter(published_at__isnull=True).exists()

            wait_until(all_published, timeout=30, what="every outbox message to be published", worker=worker)
            # The web side's result store reconnects too: calls are answered again without a restart.
            wait_until(lambda: score_call() == 200, timeout=30, what="/score to be answered after Redis came back")
    finally:
        worker.process.stop(grace=5, signum=signal.SIGQUIT, group=True)
        redis_server.stop()
