"""`add_webhook` and `webhook_listen`: the secret on the last line, and a receiver that verifies what it prints."""

import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from moderation.devstack.listener import VerificationFailed, Verifier, read_secrets, serve
from moderation.models import Client, WebhookEndpoint
from moderation.services.webhooks import delivery, sending, signing
from tests.support.webhooks import client_endpoint, relayed_events

SECRET = signing.new_secret()


def signed(body: bytes, secret: str = SECRET, when: datetime | None = None, message_id: str = "evt_1") -> dict:
    when = when or datetime.now(tz=UTC)
    return signing.headers(message_id=message_id, body=body, secrets=[secret], timestamp=when)


EVENT = json.dumps({"id": "evt_1", "type": "image.scored", "listing_id": 7, "external_id": "ad-7", "sequence": 2})
BODY = EVENT.encode()


@pytest.mark.django_db
def test_add_webhook_prints_the_secret_alone_on_the_last_line(local_webhooks):
    Client.objects.create(name="acme")
    out = io.StringIO()
    call_command("add_webhook", "acme", "https://hooks.example.com/in", "--events", "image.scored", stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    endpoint = WebhookEndpoint.objects.get()
    assert last == endpoint.secrets.get().secret and last.startswith("whsec_")
    assert endpoint.event_types == ["image.scored"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["nobody", "https://hooks.example.com/"], "No client named"),
        (["acme", "https://10.0.0.5/"], "Refused"),
        (["acme", "https://hooks.example.com/", "--events", "image.nope"], "Unknown event type"),
    ],
)
def test_add_webhook_refuses_what_it_cannot_register(args, message, settings):
    settings.VIGIA_WEBHOOK_ALLOW_PRIVATE = False
    Client.objects.create(name="acme")
    with pytest.raises(CommandError, match=message):
        call_command("add_webhook", *args, stdout=io.StringIO())
    assert not WebhookEndpoint.objects.exists()


def test_the_verifier_accepts_a_signed_request():
    assert Verifier([SECRET]).verify(BODY, signed(BODY))["type"] == "image.scored"


def test_a_tampered_body_fails_verification():
    headers = signed(BODY)
    with pytest.raises(VerificationFailed, match="No matching signature"):
        Verifier([SECRET]).verify(BODY.replace(b'"sequence": 2', b'"sequence": 3'), headers)


def test_an_old_timestamp_fails_verification():
    headers = signed(BODY, when=datetime.now(tz=UTC) - timedelta(minutes=10))
    with pytest.raises(VerificationFailed, match="too old"):
        Verifier([SECRET]).verify(BODY, headers)


def test_another_secret_or_garbage_fails_verification():
    with pytest.raises(VerificationFailed):
        Verifier([signing.new_secret()]).verify(BODY, signed(BODY))
    with pytest.raises(VerificationFailed, match="malformed"):
        Verifier([SECRET]).verify(BODY, {**signed(BODY), "webhook-signature": "nonsense"})


def test_either_secret_verifies_during_a_rotation():
    new = signing.new_secret()
    assert Verifier([SECRET, new]).verify(BODY, signed(BODY, secret=new))


def test_secret_files_hold_one_secret_a_line(tmp_path):
    path = tmp_path / "secrets"
    path.write_text(f"# demo\n{SECRET}\n\n")
    assert read_secrets(path) == [SECRET]


@pytest.fixture
def listener(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    server = serve(host="127.0.0.1", port=0, verifier=Verifier([SECRET]), out=out, err=err, record=tmp_path / "r")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    server.output, server.errors, server.record_path = out, err, tmp_path / "r"
    yield server
    server.shutdown()
    server.server_close()
    sending.close_connections()


def post(listener, body: bytes, headers: dict) -> sending.SendResult:
    return sending.post(url=listener.url, body=body, headers=headers, timeout=2)


def test_the_listener_prints_each_event_before_it_answers_204(listener, local_webhooks):
    assert post(listener, BODY, signed(BODY)).status_code == 204
    assert post(listener, BODY, signed(BODY)).status_code == 204
    lines = listener.output.getvalue().splitlines()
    assert "image.scored" in lines[0] and "listing 7 (ad-7)" in lines[0] and "seq 2" in lines[0]
    assert "evt_1" in lines[0] and "(again)" not in lines[0] and "(again)" in lines[1]
    recorded = [json.loads(line) for line in listener.record_path.read_text().splitlines()]
    assert [r["id"] for r in recorded] == ["evt_1", "evt_1"]


def test_the_listener_refuses_a_tampered_body_and_an_old_timestamp_with_400(listener, local_webhooks):
    tampered = post(listener, BODY + b" ", signed(BODY))
    old = post(listener, BODY, signed(BODY, when=datetime.now(tz=UTC) - timedelta(minutes=6)))
    assert (tampered.status_code, old.status_code) == (400, 400)
    warnings = listener.errors.getvalue()
    assert warnings.count("warning: rejected evt_1") == 2 and "too old" in warnings
    assert listener.output.getvalue() == ""
    assert (listener.received, listener.rejected) == (0, 2)


@pytest.mark.django_db
def test_the_listener_verifies_what_the_desk_sends(listener, local_webhooks):
    endpoint, secret = client_endpoint(listener.url)
    listener.verifier = Verifier([secret])
    made = relayed_events(endpoint, 3)

    assert delivery.deliver_due(endpoint_id=endpoint.pk).delivered == 3
    lines = listener.output.getvalue().splitlines()
    assert [line.split()[-1] for line in lines] == [event.public_id for event in made]


def test_the_listener_keeps_up_with_hundreds_of_requests_a_second(listener, local_webhooks):
    listener.quiet = True
    count = 300
    started = time.monotonic()
    for n in range(count):
        body = json.dumps({"id": f"evt_{n}", "type": "image.scored", "sequence": n}).encode()
        assert post(listener, body, signed(body, message_id=f"evt_{n}")).status_code == 204
    rate = count / (time.monotonic() - started)
    assert listener.received == count
    assert rate > 100, f"{rate:.0f} requests/s"
