"""What admins do with endpoints: secrets, rotation, replay, test events, enable and disable; and what beat does:
due retries handed to the webhooks queue, endpoints failing too long disabled."""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from moderation import outbox
from moderation.models import (
    AuditAction,
    AuditEntry,
    DeliveryStatus,
    Event,
    EventType,
    Listing,
    WebhookDelivery,
    WebhookSecret,
)
from moderation.selectors.events import event_page
from moderation.services import relay
from moderation.services.webhooks import delivery, dispatch, endpoints
from moderation.services.webhooks.endpoints import WebhookError
from tests.support.webhooks import client_endpoint, deliveries, relayed_events, verify

pytestmark = pytest.mark.django_db


def signed_by(secret: str, request) -> bool:
    """Whether one of the request's signatures is `secret`'s (the timestamp is not checked against the real time)."""
    when = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(secret).sign(request.webhook_id, when, request.body.decode())
    return expected in request.headers["webhook-signature"].split(" ")


def test_a_new_endpoint_has_one_secret_shown_to_its_creator(local_webhooks):
    endpoint, secret = client_endpoint("https://hooks.example.com/", event_types=["image.scored", "image.decided"])
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert list(endpoint.secrets.values_list("secret", flat=True)) == [secret]
    assert endpoint.event_types == ["image.decided", "image.scored"]
    assert endpoint.wants("image.scored") and not endpoint.wants("image.failed")


@pytest.mark.parametrize("types", [["image.scored", "image.exploded"], ["test"]])
def test_unknown_or_unsubscribable_event_types_are_refused(local_webhooks, types):
    with pytest.raises(WebhookError, match="Unknown event type"):
        client_endpoint("https://hooks.example.com/", event_types=types)


def test_rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new(hook, receiver, frozen_clock):
    new = endpoints.rotate_secret(endpoint_id=hook.pk, overlap=timedelta(hours=24))
    assert new != hook.secret
    relayed_events(hook, 1)
    delivery.deliver_due(endpoint_id=hook.pk)

    during = receiver.requests[0]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verify(hook.secret, during)  # a receiver still on the old secret verifies
    verify(new, during)  # and so does one already on the new

    frozen_clock.advance(hours=24, seconds=1)
    relayed_events(hook, 1)
    delivery.deliver_due(endpoint_id=hook.pk)

    after = receiver.requests[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert signed_by(new, after) and not signed_by(hook.secret, after)


def test_rotating_again_never_extends_an_older_secret(hook, frozen_clock):
    endpoints.rotate_secret(endpoint_id=hook.pk, overlap=timedelta(hours=1))
    frozen_clock.advance(minutes=10)
    endpoints.rotate_secret(endpoint_id=hook.pk, overlap=timedelta(hours=24))
    first, second, third = WebhookSecret.objects.filter(endpoint=hook).order_by("id")
    assert first.expires_at == frozen_clock.current - timedelta(minutes=10) + timedelta(hours=1)
    assert second.expires_at == frozen_clock.current + timedelta(hours=24)
    assert third.expires_at is None


def test_a_replay_sends_the_event_again_with_the_same_webhook_id(hook, receiver):
    [event] = relayed_events(hook, 1)
    delivery.deliver_due(endpoint_id=hook.pk)
    original = WebhookDelivery.objects.get()

    again = endpoints.replay(delivery_id=original.pk)
    by_event = endpoints.replay(event_id=event.pk, endpoint_id=hook.pk)
    delivery.deliver_due(endpoint_id=hook.pk)

    assert again.is_replay and by_event.is_replay and again.event_id == event.pk
    assert [r.webhook_id for r in receiver.requests] == [event.public_id] * 3
    assert all(verify(hook.secret, r)["id"] == event.public_id for r in receiver.requests)
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}


def test_a_replay_goes_only_to_an_enabled_endpoint_of_the_events_client(hook, receiver, local_webhooks):
    [event] = relayed_events(hook, 1)
    other, _ = client_endpoint(receiver.url, client_name="globex")
    with pytest.raises(WebhookError, match="another client"):
        endpoints.replay(event_id=event.pk, endpoint_id=other.pk)
    endpoints.disable_endpoint(endpoint_id=hook.pk, reason="paused")
    with pytest.raises(WebhookError, match="disabled"):
        endpoints.replay(event_id=event.pk, endpoint_id=hook.pk)
    with pytest.raises(WebhookError):
        endpoints.replay(event_id=event.pk)


def test_a_test_event_goes_to_its_endpoint_only_and_never_into_the_feed(hook, receiver, local_webhooks):
    sibling, _ = client_endpoint("http://127.0.0.1:9/other")  # wants every type
    test_delivery = endpoints.send_test_event(endpoint_id=hook.pk)
    relay.relay_events()

    assert list(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == [hook.pk]
    event = Event.objects.get(type=EventType.TEST)
    assert event.listing_id is None and event.position is None
    assert event_page(client=hook.client).events == []
    delivery.deliver_due(endpoint_id=hook.pk)
    body = verify(hook.secret, receiver.requests[0])
    assert (body["type"], body["listing_id"], body["cursor"], body["client"]) == ("test", None, None, "acme")
    test_delivery.refresh_from_db()
    assert test_delivery.status == DeliveryStatus.DELIVERED
    assert not WebhookDelivery.objects.filter(endpoint=sibling).exists()


def test_relay_creates_deliveries_only_for_enabled_subscribed_endpoints(local_webhooks):
    scored, _ = client_endpoint("https://a.example.com/", event_types=["image.scored"])
    everything, _ = client_endpoint("https://b.example.com/")
    paused, _ = client_endpoint("https://c.example.com/")
    endpoints.disable_endpoint(endpoint_id=paused.pk, reason="paused")
    relayed_events(everything, 2)  # listing.status_changed

    assert deliveries(scored).count() == 0
    assert deliveries(everything).count() == 2
    assert deliveries(paused).count() == 0


def test_enable_clears_the_failing_state(hook, frozen_clock):
    hook.failing_since = frozen_clock.current
    hook.save()
    endpoints.disable_endpoint(endpoint_id=hook.pk, reason="Failing for ages")
    endpoint = endpoints.enable_endpoint(endpoint_id=hook.pk)
    assert endpoint.is_enabled and endpoint.failing_since is None and endpoint.disabled_reason == ""


def test_every_change_of_an_endpoint_is_audited_and_no_secret_is_written(local_webhooks, frozen_clock):
    endpoint, first = client_endpoint("https://hooks.example.com/", event_types=["image.scored"])
    second = endpoints.rotate_secret(endpoint_id=endpoint.pk)
    endpoints.disable_endpoint(endpoint_id=endpoint.pk, reason="Receiver retired.")
    endpoints.disable_endpoint(endpoint_id=endpoint.pk, reason="Again.")  # already disabled: nothing changes
    endpoints.enable_endpoint(endpoint_id=endpoint.pk)

    trail = list(AuditEntry.objects.filter(object_type="webhookendpoint", object_id=str(endpoint.pk)).order_by("pk"))
    assert [entry.action for entry in trail] == [AuditAction.WEBHOOK_CREATED] + [AuditAction.WEBHOOK_CHANGED] * 3
    assert trail[0].after == {
        "client": endpoint.client.name,
        "url": "https://hooks.example.com/",
        "event_types": ["image.scored"],
        "description": "",
    }
    assert trail[1].note == "Signing secret rotated."
    assert (trail[2].after, trail[2].note) == ({"is_enabled": False}, "Receiver retired.")
    assert trail[3].before == {"is_enabled": False, "disabled_reason": "Receiver retired."}
    written = " ".join(f"{entry.before} {entry.after} {entry.note}" for entry in trail)
    assert first not in written and second not in written


def test_dispatch_publishes_for_endpoints_with_due_unleased_work(
    hook, frozen_clock, published, django_capture_on_commit_callbacks, local_webhooks
):
    relayed_events(hook, 2)
    waiting, _ = client_endpoint("https://later.example.com/", client_name="later")
    relayed_events(waiting, 1)
    WebhookDelivery.objects.filter(endpoint=waiting).update(next_attempt_at=frozen_clock.current + timedelta(hours=1))
    busy, _ = client_endpoint("https://busy.example.com/", client_name="busy")
    relayed_events(busy, 2)
    first = deliveries(busy).first()
    WebhookDelivery.objects.filter(pk=first.pk).update(leased_until=frozen_clock.current + timedelta(seconds=30))

    with django_capture_on_commit_callbacks(execute=True):
        result = dispatch.dispatch_due()

    assert result.published == [hook.pk]
    assert published[outbox.DELIVER_WEBHOOKS] == [hook.pk]


def test_an_endpoint_failing_longer_than_the_setting_is_disabled(hook, frozen_clock, settings):
    settings.VIGIA_WEBHOOK_DISABLE_AFTER_SECONDS = 5 * 24 * 3600
    young, _ = client_endpoint("https://young.example.com/")
    relayed_events(hook, 2)
    type(hook).objects.filter(pk=hook.pk).update(failing_since=frozen_clock.current - timedelta(days=5, seconds=1))
    type(hook).objects.filter(pk=young.pk).update(failing_since=frozen_clock.current - timedelta(days=4))

    result = dispatch.dispatch_due()

    assert result.disabled == [hook.pk]
    hook.refresh_from_db()
    assert not hook.is_enabled and "disabled after 5 days" in hook.disabled_reason
    assert set(deliveries(hook).values_list("status", flat=True)) == {DeliveryStatus.CANCELLED}
    young.refresh_from_db()
    assert young.is_enabled


def test_the_delivery_task_runs_the_batch(hook, receiver):
    from moderation.tasks.webhooks import deliver_webhooks, dispatch_webhooks

    listing = Listing.objects.create(client=hook.client, external_id="ad-task")
    relayed_events(hook, 3, listing=listing)
    assert deliver_webhooks(hook.pk)["delivered"] == 3
    assert dispatch_webhooks() == {"published": [], "disabled": []}


@pytest.mark.parametrize(
    "seconds, text", [(5 * 86400, "5 days"), (36 * 3600, "36 hours"), (5400, "90 minutes"), (45, "45 seconds")]
)
def test_spans_read_like_people_say_them(seconds, text):
    assert dispatch.span(seconds) == text
