"""A local webhook receiver for development (`manage.py webhook_listen`), like `stripe listen`.

It does what a marketplace's receiver must do and nothing more: verify each request's Standard Webhooks signature
with `standardwebhooks` (a tampered body, a wrong secret or a timestamp more than five minutes off is answered 400
and reported), print the event (type, listing, sequence and id, marked when the same `webhook-id` came before: a
retry or a replay, which a real receiver would skip) and answer 204, in that order, as a receiver must: what was
acknowledged has been kept. Connections are kept alive (HTTP/1.1) and each one is served by its own thread, so one
sender thread costs one connection and the receiver keeps up with hundreds of requests a second. `record` appends
each verified event as a JSON line, for benchmarks.
"""

from __future__ import annotations

import binascii
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

#: Largest body accepted; webhook events are a few hundred bytes.
MAX_BODY_BYTES = 1024 * 1024
#: How many `webhook-id`s are remembered to mark repeats.
REMEMBERED_IDS = 100_000


class VerificationFailed(ValueError):
    """A request that is not a valid webhook for any of the secrets; the message says why."""


class Verifier:
    """Checks requests against one or more secrets (during a rotation a receiver may hold both)."""

    def __init__(self, secrets: Sequence[str]):
        if not secrets:
            raise ValueError("At least one secret (whsec_...) is needed to verify webhooks.")
        self.hooks = [Webhook(secret.strip()) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict:
        """The event the request carries, if it is signed by one of the secrets and recent; else VerificationFailed."""
        reason = "no signature matched"
        for hook in self.hooks:
            try:
                return hook.verify(body, dict(headers))
            except WebhookVerificationError as error:
                reason = str(error)
            except (ValueError, binascii.Error, UnicodeDecodeError) as error:
                reason = f"malformed request: {error}"
        raise VerificationFailed(reason)


def read_secrets(path: Path) -> list[str]:
    """The secrets in a file, one a line (blank lines and `#` comments ignored)."""
    lines = Path(path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def describe(event: dict) -> str:
    """One line for an event: type, listing (and external id), sequence and id."""
    where = "no listing"
    if event.get("listing_id") is not None:
        where = f"listing {event['listing_id']}" + (f" ({event['external_id']})" if event.get("external_id") else "")
    return f"{event.get('type', '?'):<22} {where:<28} seq {event.get('sequence', '?'):<4} {event.get('id', '?')}"


class Listener(ThreadingHTTPServer):
    """The HTTP server: a verifier, where to print, an optional JSON-lines record, and the ids seen so far."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        verifier: Verifier,
        out: TextIO,
        err: TextIO | None = None,
        record: Path | None = None,
        quiet: bool = False,
    ):
        super().__init__(address, _Handler)
        self.verifier = verifier
        self.out, self.err = out, err or out
        self.quiet = quiet
        self.record = open(record, "a", buffering=1) if record else None  # noqa: SIM115 - closed in server_close
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()
        self.received = 0
        self.rejected = 0

    def accepted(self, event: dict, webhook_id: str) -> None:
        """Count, remember, record and print a verified event."""
        with self.lock:
            self.received += 1
            again = webhook_id in self.seen
            self.seen[webhook_id] = None
            if len(self.seen) > REMEMBERED_IDS:
                self.seen.popitem(last=False)
            if self.record is not None:
                line = {k: event.get(k) for k in ("id", "type", "listing_id", "external_id", "sequence")}
                self.record.write(json.dumps({**line, "received_at": time.time()}) + "\n")
            if not self.quiet:
                self.out.write(describe(event) + (" (again)" if again else "") + "\n")
                self.out.flush()

    def refused(self, reason: str, webhook_id: str) -> None:
        """Count and report a request that failed verification."""
        with self.lock:
            self.rejected += 1
            self.err.write(f"warning: rejected {webhook_id or 'a request'}: {reason}\n")
            self.err.flush()

    def server_close(self) -> None:
        """Stop listening and close the record file."""
        super().server_close()
        if self.record is not None:
            self.record.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Listener

    def _answer(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._answer(413, "too large")
            return
        body = self.rfile.read(length)
        webhook_id = self.headers.get("webhook-id", "")
        try:
            event = self.server.verifier.verify(body, self.headers)
        except VerificationFailed as error:
            self.server.refused(str(error), webhook_id)
            self._answer(400, f"signature verification failed: {error}\n")
            return
        # Recorded before it is acknowledged, as a receiver must: what was answered 2xx is never lost.
        self.server.accepted(event, webhook_id)
        self._answer(204)

    def do_GET(self):
        self._answer(200, "webhook_listen: POST signed webhooks here.\n")

    def log_message(self, *args):
        pass  # one line per event is printed by the server instead


def serve(*, host: str, port: int, verifier: Verifier, out: TextIO, err: TextIO | None = None, **options) -> Listener:
    """A listener bound to `host`:`port` (0: a free port), not yet serving: call `serve_forever()` on it."""
    return Listener((host, port), verifier, out, err, **options)
