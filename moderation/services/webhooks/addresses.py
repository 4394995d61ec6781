"""Where a webhook may be sent: a URL check when an endpoint is saved, and an address check before every request.

A webhook is a request the desk makes to a URL someone else typed in, from inside the desk's network: without
checks it reaches the cloud metadata service, the database or an admin port on loopback (server-side request
forgery). So endpoint URLs must be https (unless `VIGIA_WEBHOOK_ALLOW_HTTP`), and every address a host resolves to
must be public: loopback only with `VIGIA_WEBHOOK_ALLOW_LOOPBACK`, private, link-local (the metadata address
169.254.169.254 included), shared (CGNAT), multicast, reserved and unspecified ranges only with
`VIGIA_WEBHOOK_ALLOW_PRIVATE`; an IPv4-mapped IPv6 address counts as the IPv4 address it carries.

Names are checked when the request is sent, not when the endpoint is saved: a name may resolve elsewhere later.
The sender then connects to the addresses checked here and never resolves the name again, so a DNS answer that
changes between the check and the connection (DNS rebinding) cannot smuggle a private address in. If any address a
name resolves to is refused, the request is refused: a receiver must not depend on which answer comes first.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

#: Which setting allows an address that is not public.
LOOPBACK = "loopback"
PRIVATE = "private"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Most specific first: the first range an address falls in names it.
_RANGES = [
    ("127.0.0.0/8", LOOPBACK, "loopback"),
    ("::1/128", LOOPBACK, "loopback"),
    ("169.254.169.254/32", PRIVATE, "the cloud metadata address (link-local)"),
    ("169.254.0.0/16", PRIVATE, "link-local"),
    ("fe80::/10", PRIVATE, "link-local"),
    ("10.0.0.0/8", PRIVATE, "private"),
    ("172.16.0.0/12", PRIVATE, "private"),
    ("192.168.0.0/16", PRIVATE, "private"),
    ("fc00::/7", PRIVATE, "private (unique local)"),
    ("100.64.0.0/10", PRIVATE, "shared address space (CGNAT)"),
    ("0.0.0.0/8", PRIVATE, "unspecified"),
    ("::/128", PRIVATE, "unspecified"),
    ("224.0.0.0/4", PRIVATE, "multicast"),
    ("ff00::/8", PRIVATE, "multicast"),
]
_NETWORKS = [(ipaddress.ip_network(network), kind, name) for network, kind, name in _RANGES]
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


class DestinationError(ValueError):
    """A webhook cannot be sent where its URL points; the message says why (shown in the delivery log)."""


class AddressRefused(DestinationError):
    """The URL or an address its host resolves to is not allowed by the webhook settings."""


@dataclass(frozen=True)
class Target:
    """A checked endpoint URL taken apart: what to connect to and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        """The `Host` header: the name (IPv6 literals in brackets) and the port unless it is the scheme's default."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


@dataclass(frozen=True)
class Destination:
    """Where one request goes: the URL's parts and every address its host resolved to, all of them checked."""

    target: Target
    addresses: tuple[str, ...]


def classify(address: IPAddress) -> tuple[str, str] | None:
    """Which setting an address needs and what it is (e.g. `("private", "link-local")`); None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        inner = classify(address.ipv4_mapped)
        return (inner[0], f"IPv4-mapped {inner[1]}") if inner else None
    for network, kind, name in _NETWORKS:
        if address.version == network.version and address in network:
            return kind, name
    if address.is_reserved:
        return PRIVATE, "reserved"
    if not address.is_global:
        return PRIVATE, "not publicly routable"
    return None


def refusal(address: IPAddress) -> str | None:
    """Why the settings refuse to send to `address`, or None when they allow it."""
    found = classify(address)
    if found is None:
        return None
    kind, name = found
    if kind == LOOPBACK and settings.VIGIA_WEBHOOK_ALLOW_LOOPBACK:
        return None
    if kind == PRIVATE and settings.VIGIA_WEBHOOK_ALLOW_PRIVATE:
        return None
    setting = "VIGIA_WEBHOOK_ALLOW_LOOPBACK" if kind == LOOPBACK else "VIGIA_WEBHOOK_ALLOW_PRIVATE"
    return f"{address} is {name}; webhooks are not sent there unless {setting} is on"


def parse_url(*, url: str) -> Target:
    """Take an endpoint URL apart, refusing what can never be sent: a wrong scheme, no host, credentials, a bad port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise AddressRefused(f"Not a valid URL: {error}.") from None
    scheme = parts.scheme.lower()
    if scheme == "http" and not settings.VIGIA_WEBHOOK_ALLOW_HTTP:
        raise AddressRefused("Webhook URLs must use https:// (http:// only with VIGIA_WEBHOOK_ALLOW_HTTP).")
    if scheme not in ("http", "https"):
        raise AddressRefused("Webhook URLs must start with https://.")
    if not parts.hostname:
        raise AddressRefused("The URL has no host name.")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("Put no user name or password in the URL; verify the signature instead.")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=parts.hostname, port=port or (443 if scheme == "https" else 80), path=path)


def literal_address(host: str) -> IPAddress | None:
    """The host as an IP address when it is one (`10.0.0.1`, `::1`), else None (a name)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(*, url: str) -> Target:
    """Check a URL before an endpoint is saved with it: scheme, host and, for an IP literal or localhost, the address.

    Names are resolved only when a request is sent (`resolve`); raises `AddressRefused` with the reason.
    """
    target = parse_url(url=url)
    address = literal_address(target.host)
    if address is None and (target.host in _LOCAL_NAMES or target.host.endswith(".localhost")):
        address = ipaddress.ip_address("127.0.0.1")
    if address is not None and (reason := refusal(address)):
        raise AddressRefused(f"Refused: {reason}.")
    return target


def resolve(*, url: str) -> Destination:
    """Resolve the URL's host once and check every address it gives; the sender connects to these and nothing else.

    Raises `AddressRefused` when any address is refused and `DestinationError` when the name does not resolve.
    """
    target = parse_url(url=url)
    try:
        answers = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as error:
        raise DestinationError(f"Could not resolve {target.host}: {error}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        # Scope ids ("fe80::1%eth0") are not part of the address that is checked.
        text = str(sockaddr[0]).split("%", 1)[0]
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise DestinationError(f"{target.host} resolved to no address")
    for text in addresses:
        if reason := refusal(ipaddress.ip_address(text)):
            raise AddressRefused(f"Refused: {target.host} resolves to {reason}.")
    return Destination(target=target, addresses=tuple(addresses))
