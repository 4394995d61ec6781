"""`make run`'s webhooks: a worker for the `webhooks` queue, and the demo client's endpoint at a local receiver
(`webhook_listen`, a real process here) that prints each verified event."""

import io
import os
import stat
from pathlib import Path

import pytest
from django.core.management import call_command

from moderation.devstack.desk import listen_spec, process_specs
from moderation.devstack.processes import start_logged
from moderation.devstack.redis import free_tcp_port
from moderation.management.commands.bootstrap_demo import DEMO_CLIENT
from moderation.models import Client, WebhookEndpoint
from moderation.services.webhooks import delivery, sending
from tests.support.waiting import wait_until
from tests.support.webhooks import relayed_events

REPO = Path(__file__).resolve().parents[2]


def test_the_desk_runs_a_threaded_webhooks_worker_and_the_receiver(tmp_path):
    listen = listen_spec(9000, tmp_path / "secrets", {})
    specs = {spec.name: spec for spec in process_specs("127.0.0.1", 8000, {"X": "1"}, 2, listen)}

    assert list(specs) == ["worker", "training", "webhooks", "beat", "web", "listen"]
    argv = " ".join(specs["webhooks"].argv)
    assert "-Q webhooks --pool threads -c 4" in argv
    assert specs["webhooks"].env == {"X": "1", "VIGIA_PRELOAD_TENSORFLOW": "0"}
    assert specs["listen"].argv[-4:] == ["--port", "9000", "--secret-file", str(tmp_path / "secrets")]
    assert "listen" not in {spec.name for spec in process_specs("127.0.0.1", 8000, {}, 2)}


@pytest.fixture
def demo(settings, local_webhooks, tmp_path):
    settings.DEBUG = True
    settings.VAR_DIR = tmp_path

    def bootstrap(url: str) -> WebhookEndpoint:
        call_command("bootstrap_demo", "--webhook-url", url, stdout=io.StringIO())
        return WebhookEndpoint.objects.get(client__name=DEMO_CLIENT, url=url)

    return bootstrap


@pytest.mark.django_db
def test_bootstrap_registers_the_receiver_once_and_writes_its_secrets(demo, tmp_path):
    endpoint = demo("http://127.0.0.1:9000/")
    secrets_file = tmp_path / "demo-webhook-secrets"
    secret = endpoint.secrets.get().secret
    assert secrets_file.read_text() == f"{secret}\n"
    assert stat.S_IMODE(os.stat(secrets_file).st_mode) == 0o600

    type(endpoint).objects.filter(pk=endpoint.pk).update(failing_since=endpoint.created_at)
    again = demo("http://127.0.0.1:9000/")
    assert again.pk == endpoint.pk and again.failing_since is None
    assert secrets_file.read_text() == f"{secret}\n"

    moved = demo("http://127.0.0.1:9001/")
    endpoint.refresh_from_db()
    assert not endpoint.is_enabled and "9001" in endpoint.disabled_reason
    assert moved.is_enabled and WebhookEndpoint.objects.filter(client__name=DEMO_CLIENT).count() == 2


@pytest.mark.django_db
def test_webhook_listen_prints_what_the_desk_sends(demo, tmp_path):
    port = free_tcp_port()
    endpoint = demo(f"http://127.0.0.1:{port}/")
    spec = listen_spec(port, tmp_path / "demo-webhook-secrets", {"DJANGO_SETTINGS_MODULE": "moderation.test_settings"})
    spec.cwd = REPO
    process = start_logged(spec, tmp_path / "listen.log")
    try:
        process.wait_for_line("Listening for webhooks", 30)
        made = relayed_events(endpoint, 2)
        assert delivery.deliver_due(endpoint_id=endpoint.pk).delivered == 2
        wait_until(lambda: process.find_line(made[1].public_id), timeout=10, what="the second event printed")
        line = process.find_line(made[0].public_id)
        assert "listing.status_changed" in line and f"listing {made[0].listing_id}" in line and "seq 1" in line
        assert Client.objects.get(name=DEMO_CLIENT) == endpoint.client
    finally:
        sending.close_connections()
        process.stop()
