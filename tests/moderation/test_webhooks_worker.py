"""Webhook delivery by a real Celery worker on the `webhooks` queue (threads pool), with PostgreSQL and Redis: the
relay's task reaches it, it signs and sends, and a receiver that fails or goes away loses nothing. This process
plays beat: it runs the relay and the dispatcher itself."""

import pytest
from django.db import transaction

from moderation.models import DeliveryStatus, Listing, WebhookDelivery
from moderation.services import events, relay
from moderation.services.webhooks import dispatch
from tests.support.receiver import Reply
from tests.support.waiting import wait_until
from tests.support.webhooks import verify
from tests.support.workers import clean_broker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def empty_queues(webhooks_worker):
    clean_broker(webhooks_worker.broker)


def commit_events(endpoint, count: int, name: str) -> list:
    with transaction.atomic():
        listing = Listing.objects.create(client=endpoint.client, external_id=name)
        made = [events.emit(type="listing.status_changed", listing=listing, data={"n": n}) for n in range(count)]
    relay.relay_events()
    return made


def delivered(endpoint) -> int:
    return WebhookDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.DELIVERED).count()


def beat_until(condition, worker, what: str, timeout: float = 60) -> None:
    """Run the dispatcher, as beat would, until `condition` holds."""

    def tick():
        dispatch.dispatch_due()
        return condition()

    wait_until(tick, timeout=timeout, what=what, worker=worker, interval=0.3)


def test_the_worker_delivers_relayed_events_signed(hook, receiver, webhooks_worker):
    made = commit_events(hook, 5, "ad-w1")

    wait_until(lambda: delivered(hook) == 5, timeout=30, what="five deliveries", worker=webhooks_worker)
    assert sorted(r.webhook_id for r in receiver.requests) == sorted(e.public_id for e in made)
    for request in receiver.requests:
        assert verify(hook.secret, request)["id"] == request.webhook_id


def test_a_500_is_retried_by_the_worker_when_beat_dispatches_it(hook, receiver, webhooks_worker):
    receiver.script(Reply(500))
    [event] = commit_events(hook, 1, "ad-w2")

    beat_until(lambda: delivered(hook) == 1, webhooks_worker, "the retry to be delivered")
    assert [r.webhook_id for r in receiver.requests] == [event.public_id] * 2
    assert list(WebhookDelivery.objects.get().attempt_log.order_by("id").values_list("status_code", flat=True)) == [
        500,
        204,
    ]


def test_a_receiver_down_for_a_while_gets_every_event_once_back(hook, receiver, webhooks_worker):
    receiver.down()
    made = commit_events(hook, 10, "ad-w3")
    wait_until(
        lambda: WebhookDelivery.objects.filter(endpoint=hook, attempts__gt=0).exists(),
        timeout=30,
        what="a failed attempt",
        worker=webhooks_worker,
    )
    made += commit_events(hook, 10, "ad-w4")
    beat_until(lambda: WebhookDelivery.objects.filter(attempts__gt=1).exists(), webhooks_worker, "a retry")

    receiver.up()
    beat_until(lambda: delivered(hook) == 20, webhooks_worker, "every event after the outage")

    received = [r.webhook_id for r in receiver.requests]
    assert set(received) == {event.public_id for event in made}
    assert len(received) == len(set(received))  # the receiver was refusing connections: nothing got through twice
    assert not WebhookDelivery.objects.exclude(status=DeliveryStatus.DELIVERED).exists()
    hook.refresh_from_db()
    assert hook.failing_since is None
