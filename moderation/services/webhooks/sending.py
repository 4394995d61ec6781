"""One webhook request: a POST to the address `addresses.resolve` checked, bounded in time, redirects not followed.

The connection goes to the checked IP address itself (the name is never resolved again, so DNS rebinding cannot
swap in another address); the URL's host travels in the `Host` header and, for https, in SNI and the certificate
check (`server_hostname` / `assert_hostname`, certifi's CA bundle). urllib3 is used directly because it lets both
be set per connection pool; `redirect=False` and `retries=False` leave every retry decision to the delivery
schedule, and a redirect is reported as what it is instead of being followed to an address nobody checked.

Connections are kept alive per worker thread and destination, so a busy endpoint costs one TCP (and TLS) handshake
per thread rather than one per event. Only the first few KB of a response body are read, for the delivery log.
"""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

import certifi
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, ReadTimeoutError

from moderation import clock
from moderation.services.webhooks import addresses

#: Bytes of a response body kept for the delivery log; a longer body closes the connection instead of draining it.
MAX_BODY_BYTES = 2048
#: Connection pools one worker thread keeps (one per destination), least recently used dropped first.
MAX_POOLS_PER_THREAD = 32

_local = threading.local()


@dataclass(frozen=True)
class SendResult:
    """What one request came to: the status code (None when there was no response) or why not, and how long."""

    status_code: int | None
    error: str
    duration_ms: int
    retry_after: float | None = None
    body: str = ""

    @property
    def ok(self) -> bool:
        """Only a 2xx counts as delivered."""
        return self.status_code is not None and 200 <= self.status_code < 300


class _Pool:
    """A urllib3 pool of one connection to one checked address, and whether it has carried a request yet."""

    def __init__(self, target: addresses.Target, address: str):
        options = {"maxsize": 1, "block": False, "retries": False}
        if target.scheme == "https":
            self.pool = urllib3.HTTPSConnectionPool(
                address,
                target.port,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
                server_hostname=target.host,
                assert_hostname=target.host,
                **options,
            )
        else:
            self.pool = urllib3.HTTPConnectionPool(address, target.port, **options)
        self.used = False


def _pool(target: addresses.Target, address: str) -> _Pool:
    pools: OrderedDict = getattr(_local, "pools", None)
    if pools is None:
        pools = _local.pools = OrderedDict()
    key = (target.scheme, target.host, target.port, address)
    if key in pools:
        pools.move_to_end(key)
        return pools[key]
    pools[key] = _Pool(target, address)
    while len(pools) > MAX_POOLS_PER_THREAD:
        _key, evicted = pools.popitem(last=False)
        evicted.pool.close()
    return pools[key]


def close_connections() -> None:
    """Close the connections this thread keeps alive (tests, and a worker thread that is done)."""
    pools: OrderedDict = getattr(_local, "pools", None) or OrderedDict()
    while pools:
        _key, pool = pools.popitem()
        pool.pool.close()


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when: datetime = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - clock.now()).total_seconds())


def _describe(error: Exception, address: str = "") -> str:
    if isinstance(error, ReadTimeoutError):
        return "timed out waiting for the response"
    if isinstance(error, NewConnectionError):
        return f"could not connect to {address}: {str(error).rsplit(': ', 1)[-1]}"
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return f"timed out connecting to {address}"
    reason = getattr(error, "reason", None) or (error.args[-1] if error.args else "")
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


def _status_error(status: int, location: str, body: str) -> str:
    if 200 <= status < 300:
        return ""
    if 300 <= status < 400:
        return f"HTTP {status}: redirect to {location or '(no Location)'} not followed"
    snippet = " ".join(body.split())[:200]
    return f"HTTP {status}" + (f": {snippet}" if snippet else "")


def _read_body(response) -> str:
    try:
        data = response.read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            response.close()  # do not drain a large body just to keep the connection
            data = data[:MAX_BODY_BYTES]
        else:
            response.drain_conn()
    except HTTPError:
        response.close()
        data = b""
    finally:
        response.release_conn()
    return data.decode("utf-8", errors="replace")


def _request(pool: _Pool, target: addresses.Target, body: bytes, headers: dict[str, str], timeout: float):
    return pool.pool.urlopen(
        "POST",
        target.path,
        body=body,
        headers={**headers, "Host": target.host_header},
        redirect=False,
        retries=False,
        assert_same_host=False,
        timeout=urllib3.Timeout(total=timeout),
        preload_content=False,
    )


def _urlopen(pool: _Pool, target: addresses.Target, body: bytes, headers: dict[str, str], timeout: float):
    started = time.monotonic()
    try:
        response = _request(pool, target, body, headers, timeout)
    except ProtocolError:
        if not pool.used:
            raise
        # A kept-alive connection the receiver closed meanwhile: once more, on a new connection.
        response = _request(pool, target, body, headers, max(0.1, timeout - (time.monotonic() - started)))
    pool.used = True
    return response


def post(*, url: str, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
    """POST `body` to the endpoint URL's checked address; never raises for anything the network or receiver does."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        destination = addresses.resolve(url=url)
    except addresses.DestinationError as error:
        return SendResult(status_code=None, error=str(error), duration_ms=elapsed_ms())
    error_text = ""
    for address in destination.addresses:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            break
        try:
            response = _urlopen(_pool(destination.target, address), destination.target, body, headers, left)
        except NewConnectionError as error:
            error_text = _describe(error, address)  # refused or unreachable: try the next checked address
            continue
        except (HTTPError, OSError) as error:
            return SendResult(status_code=None, error=_describe(error, address), duration_ms=elapsed_ms())
        text = _read_body(response)
        status = response.status
        return SendResult(
            status_code=status,
            error=_status_error(status, response.headers.get("Location", ""), text),
            duration_ms=elapsed_ms(),
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            body=text,
        )
    return SendResult(status_code=None, error=error_text or "timed out connecting", duration_ms=elapsed_ms())
