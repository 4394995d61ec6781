"""The desk's webhook pages for admins, the settings page's alerts, health's webhooks entry and the admin."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from django.urls import reverse

from moderation.models import Client, DeliveryAttempt, DeliveryStatus, EventType, WebhookDelivery, WebhookSecret
from moderation.selectors.health import check_health
from moderation.services.webhooks import dispatch
from moderation.services.webhooks.endpoints import disable_endpoint
from tests.support.webhooks import client_endpoint, deliveries, relayed_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db, local_webhooks):
    admin = get_user_model().objects.create_superuser("boss", password="pw-boss-1")
    browser = HttpClient()
    browser.force_login(admin)
    return browser


@pytest.fixture
def endpoint(admin_client):
    made, secret = client_endpoint("https://hooks.example.com/vigia", description="acme's receiver")
    made.secret = secret
    return made


def page(browser, name, **kwargs) -> str:
    response = browser.get(reverse(name, kwargs=kwargs))
    assert response.status_code == 200
    return response.content.decode()


def test_the_list_shows_each_clients_endpoints_and_their_state(admin_client, endpoint, frozen_clock):
    failing, _ = client_endpoint("https://down.example.com/")
    type(failing).objects.filter(pk=failing.pk).update(failing_since=frozen_clock.current - timedelta(hours=3))
    gone, _ = client_endpoint("https://gone.example.com/", client_name="globex")
    disable_endpoint(endpoint_id=gone.pk, reason="The receiver answered 410 Gone.")
    Client.objects.create(name="initech")

    html = page(admin_client, "webhooks")

    assert "https://hooks.example.com/vigia" in html and "acme&#x27;s receiver" in html
    assert "Failing since" in html and "The receiver answered 410 Gone." in html
    assert "initech" in html and "No endpoint" in html


def test_a_clients_page_links_its_endpoints_and_adding_one_for_it(admin_client, endpoint):
    html = page(admin_client, "client-detail", pk=endpoint.client_id)

    assert f'href="{reverse("webhook-endpoint", args=[endpoint.pk])}"' in html
    assert f'href="{reverse("webhook-add")}?client={endpoint.client_id}"' in html
    assert "Enabled" in html and endpoint.secret not in html


def test_adding_an_endpoint_shows_its_secret_once(admin_client):
    acme = Client.objects.create(name="acme")
    response = admin_client.post(
        reverse("webhook-add"),
        {"client": acme.pk, "url": "https://hooks.example.com/in", "event_types": ["image.scored"], "description": ""},
    )
    assert response.status_code == 302
    secret = WebhookSecret.objects.get().secret
    first = admin_client.get(response["Location"]).content.decode()
    assert secret in first and "shown once" in first
    assert "no-store" in admin_client.get(response["Location"])["Cache-Control"]
    assert secret not in admin_client.get(response["Location"]).content.decode()


def test_a_refused_url_is_explained_and_nothing_is_added(admin_client, settings):
    settings.VIGIA_WEBHOOK_ALLOW_PRIVATE = False
    acme = Client.objects.create(name="acme")
    response = admin_client.post(reverse("webhook-add"), {"client": acme.pk, "url": "https://169.254.169.254/"})
    assert response.status_code == 200
    assert "cloud metadata address" in response.content.decode()
    assert not acme.webhook_endpoints.exists()


def test_rotating_shows_the_new_secret_once_and_keeps_the_old_signing(admin_client, endpoint):
    response = admin_client.post(reverse("webhook-rotate", args=[endpoint.pk]))
    assert response.status_code == 302
    old, new = WebhookSecret.objects.filter(endpoint=endpoint).order_by("id")
    assert old.expires_at is not None and new.expires_at is None
    html = admin_client.get(response["Location"]).content.decode()
    assert new.secret in html and old.secret not in html
    assert new.secret not in page(admin_client, "webhook-endpoint", pk=endpoint.pk)


def test_disable_and_enable(admin_client, endpoint):
    relayed_events(endpoint, 1)
    admin_client.post(reverse("webhook-disable", args=[endpoint.pk]))
    endpoint.refresh_from_db()
    assert not endpoint.is_enabled and endpoint.disabled_reason == "Disabled by boss."
    assert "Disabled by boss." in page(admin_client, "webhook-endpoint", pk=endpoint.pk)
    assert WebhookDelivery.objects.get().status == DeliveryStatus.CANCELLED
    admin_client.post(reverse("webhook-enable", args=[endpoint.pk]))
    endpoint.refresh_from_db()
    assert endpoint.is_enabled


def test_send_test_event_queues_a_delivery_to_this_endpoint(admin_client, endpoint):
    response = admin_client.post(reverse("webhook-test", args=[endpoint.pk]), follow=True)
    delivery = WebhookDelivery.objects.get()
    assert delivery.endpoint_id == endpoint.pk and delivery.event.type == EventType.TEST
    assert f"Test event queued as delivery {delivery.pk}" in response.content.decode()


def test_the_delivery_log_pages_newest_first_with_every_attempt(admin_client, endpoint, frozen_clock):
    relayed_events(endpoint, 30)
    oldest = deliveries(endpoint).first()
    DeliveryAttempt.objects.create(
        delivery=oldest,
        attempted_at=frozen_clock.current,
        duration_ms=15003,
        error="timed out waiting for the response",
        next_attempt_at=frozen_clock.current + timedelta(minutes=5),
    )
    DeliveryAttempt.objects.create(delivery=oldest, attempted_at=frozen_clock.current, duration_ms=12, status_code=503)

    first = page(admin_client, "webhook-endpoint", pk=endpoint.pk)
    ids = [int(pk) for pk in re.findall(r'data-delivery="(\d+)"', first)]
    assert len(ids) == 25 and ids == sorted(ids, reverse=True)
    second = admin_client.get(reverse("webhook-endpoint", args=[endpoint.pk]), {"page": 2}).content.decode()
    assert f'data-delivery="{oldest.pk}"' in second
    assert "15003 ms" in second and "timed out waiting for the response" in second and "next try" in second
    assert "<strong>503</strong>" in second
    assert second.count(">Replay</button>") == 5


def test_replay_from_the_log(admin_client, endpoint):
    [event] = relayed_events(endpoint, 1)
    original = WebhookDelivery.objects.get()
    response = admin_client.post(reverse("webhook-replay", args=[original.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("webhook-endpoint", args=[endpoint.pk])
    replayed = WebhookDelivery.objects.exclude(pk=original.pk).get()
    assert replayed.is_replay and replayed.event_id == event.pk


def test_webhook_forms_need_a_csrf_token(endpoint):
    admin = get_user_model().objects.get(username="boss")
    browser = HttpClient(enforce_csrf_checks=True)
    browser.force_login(admin)
    for name in ("webhook-rotate", "webhook-disable", "webhook-test"):
        assert browser.post(reverse(name, args=[endpoint.pk])).status_code == 403
    html = browser.get(reverse("webhook-endpoint", args=[endpoint.pk])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert browser.post(reverse("webhook-test", args=[endpoint.pk]), {"csrfmiddlewaretoken": token}).status_code == 302


def test_moderators_cannot_see_webhooks(endpoint):
    from tests.support.factories import make_moderator

    browser = HttpClient()
    browser.force_login(make_moderator())
    assert browser.get(reverse("webhooks")).status_code == 403
    assert browser.get(reverse("webhook-endpoint", args=[endpoint.pk])).status_code == 403


def test_failing_too_long_is_disabled_and_shown_on_settings_and_in_health(admin_client, endpoint, frozen_clock):
    failing, _ = client_endpoint("https://flaky.example.com/", client_name="globex")
    type(failing).objects.filter(pk=failing.pk).update(failing_since=frozen_clock.current - timedelta(hours=2))
    type(endpoint).objects.filter(pk=endpoint.pk).update(failing_since=frozen_clock.current - timedelta(days=6))
    relayed_events(failing, 2)

    dispatch.dispatch_due()

    html = page(admin_client, "moderation-settings")
    assert "Webhook endpoints that need attention" in html
    assert reverse("webhook-endpoint", args=[endpoint.pk]) in html and "disabled after 5 days" in html
    assert reverse("webhook-endpoint", args=[failing.pk]) in html and "failing since" in html
    health = check_health(timeout=0.2)
    assert health.as_dict()["webhooks"] == {"enabled": 1, "failing": 1, "disabled": 1, "pending_deliveries": 2}
    assert "webhooks" not in health.checks  # information: it never makes health a 503


def test_the_settings_page_is_quiet_when_every_endpoint_is_fine(admin_client, endpoint):
    assert "need attention" not in page(admin_client, "moderation-settings")


def test_the_admin_shows_webhook_rows_read_only_and_never_a_secret(admin_client, endpoint):
    relayed_events(endpoint, 1)
    delivery = WebhookDelivery.objects.get()
    html = admin_client.get(reverse("admin:moderation_webhookendpoint_change", args=[endpoint.pk])).content.decode()
    assert endpoint.url in html and endpoint.secret not in html
    assert admin_client.get(reverse("admin:moderation_webhookdelivery_change", args=[delivery.pk])).status_code == 200
    assert admin_client.get(reverse("admin:moderation_webhookdelivery_add")).status_code == 403
    assert admin_client.post(reverse("admin:moderation_webhookdelivery_delete", args=[delivery.pk])).status_code == 403
    secret_page = admin_client.get(reverse("admin:moderation_webhooksecret_changelist")).content.decode()
    assert endpoint.secret not in secret_page


def test_a_failing_endpoints_page_says_when_the_waiting_deliveries_are_tried_again(
    admin_client, endpoint, frozen_clock
):
    last = frozen_clock.current - timedelta(minutes=2)
    type(endpoint).objects.filter(pk=endpoint.pk).update(
        failing_since=frozen_clock.current - timedelta(hours=3), last_failure_at=last
    )

    html = page(admin_client, "webhook-endpoint", pk=endpoint.pk)

    assert f"last failed attempt {last:%Y-%m-%d %H:%M:%S}" in html
    assert "wait for the next retry or probe (at most 5 minutes after the last failure)" in html


def test_an_endpoint_failing_with_no_failure_time_says_only_the_retry(admin_client, endpoint, frozen_clock):
    type(endpoint).objects.filter(pk=endpoint.pk).update(failing_since=frozen_clock.current - timedelta(hours=3))
    html = page(admin_client, "webhook-endpoint", pk=endpoint.pk)
    assert "new deliveries wait for the next retry; the first success" in html and "probe" not in html
