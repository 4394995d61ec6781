"""Where webhooks may go: https and public addresses only, unless the settings allow loopback or private ranges;
names are resolved when a request is sent, every answer checked, and the checked address is the one connected to."""

import ipaddress
import socket

import pytest

from moderation.models import DeliveryAttempt
from moderation.services.webhooks import addresses, delivery, sending
from moderation.services.webhooks.endpoints import WebhookError
from tests.support.webhooks import client_endpoint, relayed_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def strict(settings):
    """Production's defaults: https only, no loopback, no private ranges."""
    settings.VIGIA_WEBHOOK_ALLOW_HTTP = False
    settings.VIGIA_WEBHOOK_ALLOW_LOOPBACK = False
    settings.VIGIA_WEBHOOK_ALLOW_PRIVATE = False
    return settings


REAL_GETADDRINFO = socket.getaddrinfo


def is_literal(host) -> bool:
    return addresses.literal_address(str(host)) is not None


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """Resolve the names in `answers` to those addresses (others fail) for every caller, urllib3 included; IP
    literals resolve as usual. Returns the names looked up, in order."""
    asked = []

    def getaddrinfo(host, port, *args, **kwargs):
        if is_literal(host):
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [(family[ipaddress.ip_address(a).version], socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    "address, kind",
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("10.255.255.254", "private"),
        ("172.16.4.1", "private"),
        ("192.168.1.10", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "private"),
        ("169.254.10.1", "private"),
        ("fe80::1", "private"),
        ("100.64.0.1", "private"),
        ("224.0.0.251", "private"),
        ("ff02::1", "private"),
        ("0.0.0.0", "private"),
        ("::", "private"),
        ("240.0.0.1", "private"),
        ("192.0.2.7", "private"),
        ("::ffff:169.254.169.254", "private"),
        ("::ffff:10.1.2.3", "private"),
    ],
)
def test_non_public_addresses_are_classified(address, kind):
    found = addresses.classify(ipaddress.ip_address(address))
    assert found is not None and found[0] == kind


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert addresses.classify(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://10.0.0.8/hooks",
        "https://10.200.1.1:8443/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hooks",
        "https://[::ffff:169.254.169.254]/",
        "https://100.64.3.4/",
        "https://localhost/hooks",
        "https://api.localhost/hooks",
    ],
)
def test_saving_an_endpoint_refuses_a_non_public_literal_address(strict, url):
    with pytest.raises(WebhookError, match="Refused"):
        client_endpoint(url)


def test_saving_needs_https_unless_http_is_allowed(strict):
    with pytest.raises(WebhookError, match="https"):
        client_endpoint("http://hooks.example.com/")
    with pytest.raises(WebhookError, match="https"):
        client_endpoint("ftp://hooks.example.com/")
    strict.VIGIA_WEBHOOK_ALLOW_HTTP = True
    endpoint, _ = client_endpoint("http://hooks.example.com/")
    assert endpoint.url == "http://hooks.example.com/"


@pytest.mark.parametrize(
    "url", ["https:///nohost", "https://user:pw@hooks.example.com/", "https://h.example.com:99999/"]
)
def test_saving_refuses_urls_that_cannot_be_sent(strict, url):
    with pytest.raises(WebhookError):
        client_endpoint(url)


def test_saving_does_not_resolve_names(strict, monkeypatch):
    asked = fake_dns(monkeypatch, {})
    endpoint, _ = client_endpoint("https://hooks.example.com/vigia?source=desk")
    assert asked == [] and endpoint.pk


def test_each_setting_allows_only_its_own_ranges(strict):
    strict.VIGIA_WEBHOOK_ALLOW_LOOPBACK = True
    client_endpoint("https://127.0.0.1:9000/")
    with pytest.raises(WebhookError, match="VIGIA_WEBHOOK_ALLOW_PRIVATE"):
        client_endpoint("https://10.0.0.8/")
    strict.VIGIA_WEBHOOK_ALLOW_LOOPBACK = False
    strict.VIGIA_WEBHOOK_ALLOW_PRIVATE = True
    client_endpoint("https://10.0.0.8/")
    client_endpoint("https://169.254.169.254/")
    with pytest.raises(WebhookError, match="VIGIA_WEBHOOK_ALLOW_LOOPBACK"):
        client_endpoint("https://127.0.0.1/")


@pytest.mark.parametrize(
    "answers, refused",
    [
        (["10.0.0.7"], "private"),
        (["169.254.169.254"], "metadata"),
        (["::ffff:169.254.169.254"], "IPv4-mapped"),
        (["93.184.216.34", "10.1.1.1"], "private"),
        (["2606:4700:4700::1111", "::1"], "loopback"),
        (["100.64.0.9"], "CGNAT"),
    ],
)
def test_a_name_resolving_to_a_refused_address_is_refused_when_sending(strict, monkeypatch, answers, refused):
    fake_dns(monkeypatch, {"hooks.example.com": answers})
    with pytest.raises(addresses.AddressRefused, match=refused):
        addresses.resolve(url="https://hooks.example.com/")


def test_a_public_name_resolves_to_its_checked_addresses(strict, monkeypatch):
    fake_dns(monkeypatch, {"hooks.example.com": ["93.184.216.34", "2606:4700:4700::1111", "93.184.216.34"]})
    destination = addresses.resolve(url="https://hooks.example.com:8443/in?x=1")
    assert destination.addresses == ("93.184.216.34", "2606:4700:4700::1111")
    assert destination.target.host_header == "hooks.example.com:8443"
    assert destination.target.path == "/in?x=1"


def test_localhost_is_refused_at_send_time_unless_loopback_is_allowed(strict):
    with pytest.raises(addresses.AddressRefused, match="loopback"):
        addresses.resolve(url="https://localhost:9000/")
    strict.VIGIA_WEBHOOK_ALLOW_LOOPBACK = True
    assert set(addresses.resolve(url="https://localhost:9000/").addresses) <= {"127.0.0.1", "::1"}


def test_an_unknown_name_is_a_failure_with_a_reason(strict, monkeypatch):
    fake_dns(monkeypatch, {})
    with pytest.raises(addresses.DestinationError, match="Could not resolve nowhere.example"):
        addresses.resolve(url="https://nowhere.example/")


def test_the_request_goes_to_the_checked_address_without_resolving_again(local_webhooks, receiver, monkeypatch):
    """DNS rebinding: the second answer would be private, but nobody asks a second time."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    asked = []

    def rebinding(host, port, *args, **kwargs):
        if is_literal(host):
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    result = sending.post(
        url=f"http://rebind.example:{receiver.port}/hooks", body=b"{}", headers={"webhook-id": "evt_1"}, timeout=2
    )
    assert result.status_code == 204, result.error
    assert asked == ["rebind.example"]
    assert receiver.requests[0].headers["host"] == f"rebind.example:{receiver.port}"


def test_a_delivery_to_a_name_resolving_to_the_metadata_address_sends_nothing(local_webhooks, monkeypatch, receiver):
    fake_dns(monkeypatch, {"hooks.example.com": ["169.254.169.254"]})
    endpoint, _ = client_endpoint("http://hooks.example.com/")
    relayed_events(endpoint, 1)

    delivery.deliver_due(endpoint_id=endpoint.pk)

    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None and "cloud metadata" in attempt.error
    assert receiver.requests == []
