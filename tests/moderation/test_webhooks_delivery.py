"""Webhook delivery against a real HTTP receiver on loopback: signatures, retries, timeouts, redirects, 410, 429,
an outage, and what a failing endpoint does to the deliveries queued behind the one that failed."""

from datetime import timedelta
from email.utils import format_datetime

import pytest

from moderation.api.serializers import EventSerializer
from moderation.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from moderation.services.webhooks import delivery, endpoints
from tests.support.receiver import Reply
from tests.support.webhooks import deliveries, relayed_events, verify

pytestmark = pytest.mark.django_db


def deliver(endpoint) -> delivery.BatchResult:
    return delivery.deliver_due(endpoint_id=endpoint.pk)


def test_an_event_arrives_signed_in_the_feed_shape(hook, receiver):
    [event] = relayed_events(hook, 1)

    result = deliver(hook)

    assert (result.attempted, result.delivered) == (1, 1)
    [request] = receiver.requests
    body = verify(hook.secret, request)
    event.refresh_from_db()
    assert body == EventSerializer(event).data
    assert set(body) == {"id", "type", "timestamp", "client", "listing_id", "external_id", "sequence", "cursor", "data"}
    assert request.headers["webhook-id"] == event.public_id == body["id"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Vigia-Webhooks/1"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.path == "/hooks"
    row = WebhookDelivery.objects.get()
    assert (row.status, row.attempts, row.last_status_code, row.leased_until) == ("delivered", 1, 204, None)
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code == 204 and attempt.error == "" and attempt.next_attempt_at is None


def test_a_500_is_retried_after_the_backoff_with_the_same_webhook_id(hook, receiver, frozen_clock):
    receiver.script(Reply(500, body=b"database down"))
    relayed_events(hook, 1)

    assert deliver(hook).failed == 1
    row = WebhookDelivery.objects.get()
    assert row.status == DeliveryStatus.PENDING and row.last_status_code == 500
    assert "HTTP 500: database down" in row.last_error
    assert timedelta(seconds=4) <= row.next_attempt_at - frozen_clock.current <= timedelta(seconds=6)
    hook.refresh_from_db()
    assert hook.failing_since == frozen_clock.current

    assert deliver(hook).attempted == 0  # not due yet
    frozen_clock.advance(seconds=6.1)
    assert deliver(hook).delivered == 1

    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id and first.body == second.body
    verify(hook.secret, second)
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("delivered", 2)
    codes = list(DeliveryAttempt.objects.order_by("id").values_list("status_code", flat=True))
    assert codes == [500, 204]
    assert DeliveryAttempt.objects.order_by("id").first().next_attempt_at is not None
    hook.refresh_from_db()
    assert hook.failing_since is None


def test_a_receiver_slower_than_the_timeout_is_retried(hook, receiver, frozen_clock, settings):
    settings.VIGIA_WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.script(Reply(204, delay=1.0))
    relayed_events(hook, 1)

    assert deliver(hook).failed == 1
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None and "timed out" in attempt.error
    assert attempt.duration_ms < 900
    frozen_clock.advance(seconds=7)
    assert deliver(hook).delivered == 1
    assert len({r.webhook_id for r in receiver.requests}) == 1


def test_a_redirect_is_not_followed_and_counts_as_a_failure(hook, receiver):
    receiver.script(Reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
    relayed_events(hook, 1)

    assert deliver(hook).failed == 1
    assert len(receiver.requests) == 1
    row = WebhookDelivery.objects.get()
    assert row.status == DeliveryStatus.PENDING and row.last_status_code == 302
    assert "redirect to http://169.254.169.254/latest/meta-data/ not followed" in row.last_error


def test_410_disables_the_endpoint_and_cancels_what_is_pending(hook, receiver):
    receiver.script(Reply(410))
    relayed_events(hook, 3)

    deliver(hook)

    assert len(receiver.requests) == 1
    hook.refresh_from_db()
    assert not hook.is_enabled and "410" in hook.disabled_reason and hook.disabled_at is not None
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.CANCELLED}
    assert deliver(hook).attempted == 0


def test_429_waits_as_long_as_retry_after_says(hook, receiver, frozen_clock):
    receiver.script(Reply(429, headers={"Retry-After": "120"}))
    relayed_events(hook, 1)

    deliver(hook)
    row = WebhookDelivery.objects.get()
    assert row.next_attempt_at == frozen_clock.current + timedelta(seconds=120)
    frozen_clock.advance(seconds=100)
    assert deliver(hook).attempted == 0
    frozen_clock.advance(seconds=21)
    assert deliver(hook).delivered == 1


def test_429_with_an_http_date(hook, receiver, frozen_clock):
    later = frozen_clock.current + timedelta(hours=1)
    receiver.script(Reply(429, headers={"Retry-After": format_datetime(later, usegmt=True)}))
    relayed_events(hook, 1)

    deliver(hook)

    wait = WebhookDelivery.objects.get().next_attempt_at - frozen_clock.current
    assert timedelta(minutes=59) < wait <= timedelta(hours=1)


def test_a_failure_stops_the_batch_and_the_rest_wait_with_it(hook, receiver, frozen_clock):
    receiver.script(Reply(503))
    relayed_events(hook, 5)

    result = deliver(hook)

    assert (result.attempted, result.failed) == (1, 1)
    assert len(receiver.requests) == 1
    first, *rest = deliveries(hook)
    assert first.attempts == 1
    assert {(d.attempts, d.next_attempt_at) for d in rest} == {(0, first.next_attempt_at)}

    # New events for a failing endpoint join the wait instead of spending a request each.
    relayed_events(hook, 2)
    assert deliver(hook).attempted == 0
    assert len(receiver.requests) == 1
    assert {d.next_attempt_at for d in deliveries(hook)} == {first.next_attempt_at}

    frozen_clock.advance(seconds=7)
    result = deliver(hook)
    assert (result.attempted, result.delivered) == (7, 7)
    assert [r.webhook_id for r in receiver.requests[1:]] == [d.event.public_id for d in deliveries(hook)]


def test_a_recovered_receiver_gets_its_backlog_at_once(hook, receiver, frozen_clock):
    receiver.script(Reply(500))
    relayed_events(hook, 3)
    deliver(hook)
    head, second, third = deliveries(hook)
    # The third has a long backoff of its own (it failed often before).
    WebhookDelivery.objects.filter(pk=third.pk).update(
        attempts=4, next_attempt_at=frozen_clock.current + timedelta(hours=5)
    )

    frozen_clock.advance(seconds=7)
    result = deliver(hook)

    assert result.delivered == 3
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}


def test_an_admin_test_event_retries_a_failing_endpoint_now(hook, receiver, frozen_clock):
    receiver.script(Reply(500))
    relayed_events(hook, 2)
    deliver(hook)

    endpoints.send_test_event(endpoint_id=hook.pk)
    result = deliver(hook)

    assert result.delivered == 3
    assert receiver.requests[1].body.startswith(b'{"id":"evt_')
    assert verify(hook.secret, receiver.requests[1])["type"] == "test"


def test_receiver_down_then_back_loses_nothing(hook, receiver, frozen_clock, settings):
    settings.VIGIA_WEBHOOK_TIMEOUT_SECONDS = 0.3
    # The first answer comes too late: the receiver has the event, the sender does not know it.
    receiver.script(Reply(204, delay=0.8))
    made = relayed_events(hook, 6)
    deliver(hook)
    receiver.down()
    for step in (5, 300, 1800):
        frozen_clock.advance(seconds=step * 1.25)
        made += relayed_events(hook, 2)
        deliver(hook)
        deliver(hook)
    assert not WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).exists()
    hook.refresh_from_db()
    assert hook.failing_since is not None

    receiver.up()
    frozen_clock.advance(seconds=7200 * 1.25)
    result = deliver(hook)

    assert result.delivered == len(made) == 12
    received = [r.webhook_id for r in receiver.requests]
    assert set(received) == {event.public_id for event in made}
    assert received.count(made[0].public_id) == 2  # the one whose answer was lost, and only it
    assert len(received) == len(made) + 1
    bodies = {}
    for request in receiver.requests:
        assert bodies.setdefault(request.webhook_id, request.body) == request.body


def test_retries_end_in_failed_after_the_schedule(hook, receiver, frozen_clock, settings):
    settings.VIGIA_WEBHOOK_RETRY_SCHEDULE = [1.0, 2.0]
    receiver.default = Reply(500)
    relayed_events(hook, 1)

    for _ in range(3):
        deliver(hook)
        frozen_clock.advance(seconds=3)

    row = WebhookDelivery.objects.get()
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 3, None)
    nexts = list(DeliveryAttempt.objects.order_by("id").values_list("next_attempt_at", flat=True))
    assert nexts[0] is not None and nexts[1] is not None and nexts[2] is None
    assert deliver(hook).attempted == 0


def test_a_refused_address_is_a_failed_attempt_and_nothing_is_sent(hook, receiver, settings):
    settings.VIGIA_WEBHOOK_ALLOW_LOOPBACK = False
    relayed_events(hook, 1)

    deliver(hook)

    assert receiver.requests == []
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None and "loopback" in attempt.error and "Refused" in attempt.error


def test_deliveries_share_a_kept_alive_connection(hook, receiver):
    relayed_events(hook, 5)

    assert deliver(hook).delivered == 5
    assert receiver.connections_made == 1


def test_a_disabled_endpoint_sends_nothing(hook, receiver):
    relayed_events(hook, 2)
    endpoints.disable_endpoint(endpoint_id=hook.pk, reason="by hand")

    assert deliver(hook).attempted == 0
    assert receiver.requests == []
    assert WebhookEndpoint.objects.get(pk=hook.pk).disabled_reason == "by hand"


def test_relaxed_commits_end_with_the_batch(hook, receiver):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    relayed_events(hook, 2)
    assert deliver(hook).delivered == 2
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_a_failure_seen_by_another_worker_is_cleared_by_the_next_success(hook, receiver, monkeypatch, frozen_clock):
    relayed_events(hook, 3)
    real_post = delivery.sending.post
    calls = []

    def post(**kwargs):
        if not calls:  # meanwhile, another worker's attempt for this endpoint failed
            WebhookEndpoint.objects.filter(pk=hook.pk).update(failing_since=frozen_clock.current)
        calls.append(kwargs["url"])
        return real_post(**kwargs)

    monkeypatch.setattr(delivery.sending, "post", post)
    assert deliver(hook).delivered == 3
    hook.refresh_from_db()
    assert hook.failing_since is None


def test_late_in_the_schedule_a_receiver_that_is_back_gets_its_backlog_at_the_next_probe(
    hook, receiver, frozen_clock, settings
):
    settings.VIGIA_WEBHOOK_RETRY_SCHEDULE = [18000.0]  # the failed delivery's retry is five hours away
    receiver.script(Reply(500))
    relayed_events(hook, 3)
    deliver(hook)
    first, *waiting = deliveries(hook)
    hook.refresh_from_db()
    probe_at = hook.last_failure_at + timedelta(seconds=settings.VIGIA_WEBHOOK_PROBE_SECONDS)
    assert first.next_attempt_at > frozen_clock.current + timedelta(hours=3)
    assert {d.next_attempt_at for d in waiting} == {probe_at}

    # The receiver is back; new events still wait with the rest, until the probe.
    relayed_events(hook, 2)
    assert deliver(hook).attempted == 0
    frozen_clock.advance(seconds=settings.VIGIA_WEBHOOK_PROBE_SECONDS - 1)
    assert deliver(hook).attempted == 0
    frozen_clock.advance(seconds=1)
    result = deliver(hook)

    assert (result.delivered, result.failed) == (5, 0)
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    hook.refresh_from_db()
    assert hook.failing_since is None


def test_a_dead_receiver_gets_its_retries_and_one_probe_per_interval_and_nothing_is_used_up(
    hook, receiver, frozen_clock, monkeypatch
):
    monkeypatch.setattr(delivery, "JITTER", 0.0)  # the default schedule, 5 s, 5 min, 30 min, 2 h, ..., exactly
    receiver.default = Reply(500)
    relayed_events(hook, 3)
    deliver(hook)
    for _ in range(60):  # an hour, with beat's dispatch every minute and two new events a minute
        frozen_clock.advance(seconds=60)
        relayed_events(hook, 2)
        deliver(hook)

    # The failed delivery at 0 s, its retries at 60 s (5 s late: beat's minute), 360 s and 2160 s; probes 300 s
    # after each failed attempt in between: 660, 960, 1260, 1560, 1860, 2460, 2760, 3060 and 3360 s.
    assert len(receiver.requests) == 13
    head, probed, *rest = deliveries(hook)
    assert head.attempts == 4 and head.status == DeliveryStatus.PENDING
    # Every probe tried the first waiting delivery; it keeps its place in the schedule, like all the others.
    assert {r.webhook_id for r in receiver.requests} == {head.event.public_id, probed.event.public_id}
    assert probed.attempts == 0 and DeliveryAttempt.objects.filter(delivery=probed).count() == 9
    assert {d.attempts for d in rest} == {0} and len(rest) == 1 + 120
    assert not WebhookDelivery.objects.exclude(status=DeliveryStatus.PENDING).exists()


def test_a_receiver_that_throttled_with_retry_after_is_not_probed_before_that_time(hook, receiver, frozen_clock):
    receiver.script(Reply(429, headers={"Retry-After": "3600"}))
    relayed_events(hook, 3)
    deliver(hook)

    frozen_clock.advance(seconds=1800)
    assert deliver(hook).attempted == 0
    frozen_clock.advance(seconds=1801)
    assert deliver(hook).delivered == 3


def test_no_second_request_starts_while_one_to_a_failing_endpoint_is_in_flight(hook, receiver, frozen_clock):
    receiver.script(Reply(500))
    relayed_events(hook, 3)
    deliver(hook)
    frozen_clock.advance(seconds=400)  # past the retry and the probe
    head, probe, _ = deliveries(hook)
    # Another worker took the head's retry a moment ago and waits for the receiver's answer.
    WebhookDelivery.objects.filter(pk=head.pk).update(leased_until=frozen_clock.current + timedelta(seconds=40))

    result = deliver(hook)

    assert result.attempted == 0 and "another worker" in result.stopped
    assert len(receiver.requests) == 1
