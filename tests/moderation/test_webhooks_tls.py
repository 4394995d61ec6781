"""https webhooks: the connection goes to the checked address while TLS checks the URL's host name, against the
CA bundle (certifi's in production; a test CA here, made with the openssl command)."""

import shutil
import socket
import ssl
import subprocess

import pytest

from moderation.services.webhooks import addresses, sending
from tests.support.receiver import Receiver

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A test CA and a certificate it signed for hooks.test."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Vigia test CA")
    openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=hooks.test")
    (folder / "san.cnf").write_text("subjectAltName=DNS:hooks.test\n")
    openssl(
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "2", "-extfile", "san.cnf",
    )  # fmt: skip
    return folder


@pytest.fixture
def tls_receiver(certificates, settings, monkeypatch):
    """A receiver serving https with the hooks.test certificate; hooks.test and other.test resolve to it."""
    settings.VIGIA_WEBHOOK_ALLOW_LOOPBACK = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "leaf.pem", certificates / "leaf.key")

    def getaddrinfo(host, port, *args, **kwargs):
        if host in ("hooks.test", "other.test"):
            host = "127.0.0.1"
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with Receiver(tls=context) as receiver:
        yield receiver
    sending.close_connections()


def send(url: str) -> sending.SendResult:
    return sending.post(url=url, body=b"{}", headers={"webhook-id": "evt_tls"}, timeout=3)


def test_https_checks_the_certificate_of_the_host_name_while_connecting_to_the_address(
    tls_receiver, certificates, monkeypatch
):
    monkeypatch.setattr(sending.certifi, "where", lambda: str(certificates / "ca.pem"))
    result = send(f"https://hooks.test:{tls_receiver.port}/in")
    assert result.status_code == 204, result.error
    assert tls_receiver.requests[0].headers["host"] == f"hooks.test:{tls_receiver.port}"
    assert addresses.resolve(url=f"https://hooks.test:{tls_receiver.port}/").addresses == ("127.0.0.1",)


def test_a_certificate_for_another_name_is_refused(tls_receiver, certificates, monkeypatch):
    monkeypatch.setattr(sending.certifi, "where", lambda: str(certificates / "ca.pem"))
    result = send(f"https://other.test:{tls_receiver.port}/in")
    assert result.status_code is None and "SSL" in result.error, result.error
    assert tls_receiver.requests == []


def test_a_certificate_from_an_unknown_ca_is_refused(tls_receiver):
    result = send(f"https://hooks.test:{tls_receiver.port}/in")
    assert result.status_code is None and "certificate verify failed" in result.error
    assert tls_receiver.requests == []
