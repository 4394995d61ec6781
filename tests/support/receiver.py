"""A webhook receiver for tests: a real HTTP server on a free loopback port that records every request and answers
as the test scripts it (a status, headers, a body, a delay), and can be taken down and brought back on its port."""

import contextlib
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer; `delay` seconds pass before it is sent (past the sender's timeout, it never arrives)."""

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        """The `webhook-id` header."""
        return self.headers.get("webhook-id", "")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.server.connections.add(self.connection)
        self.server.receiver.connections_made += 1

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()
        self.server.connections.discard(self.connection)

    def do_POST(self):
        receiver: Receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = receiver.next_reply()
        receiver.requests.append(Received(self.path, headers, body, time.time()))
        if reply.delay:
            time.sleep(reply.delay)
        with contextlib.suppress(OSError):
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    def log_message(self, *args):
        pass


class Receiver:
    """Start with `with Receiver() as receiver:`; `receiver.url` is where to point an endpoint."""

    def __init__(self, port: int = 0, tls=None):
        self.port = port
        self.tls = tls  # an ssl.SSLContext to serve https with
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.connections_made = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The receiver's URL (loopback; https when it serves TLS)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order; then with `default`."""
        with self._lock:
            self.replies.extend(replies)

    def next_reply(self) -> Reply:
        """The answer to the request that just came in."""
        with self._lock:
            return self.replies.popleft() if self.replies else self.default

    def up(self) -> None:
        """Listen (again, on the same port once it had one)."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.receiver = self
        server.connections = set()
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut the open connections: the next request is refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for connection in list(server.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> "Receiver":
        self.up()
        return self

    def __exit__(self, *exc_info) -> None:
        self.down()
