"""Process-level helpers of the local stack: start children that never outlive their starter, and stop them.

PIDs, process groups, the parent-death signal, `ProcessSpec`, and `LoggedProcess` (one child with its output in a
log file, waited for until a line appears in it).

Two facts shape them. A process started here must not outlive whoever started it, even when that one is
killed by SIGKILL: every child asks Linux for a parent-death signal and runs in its own session (process
group), so that a stop reaches the pool children a leader forked too. And a stop is polite first (the leader
shuts down in its own order) and forcible after a grace period (SIGKILL to the whole group).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1

try:
    # Resolved once here: loading a library between fork and exec, with threads running, could deadlock.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


class DevstackError(RuntimeError):
    """Something the local stack needs is missing or would not start; the message says what to do."""


@dataclass
class ProcessSpec:
    """One long-running process: a short name (log prefix, log file), its command, extra env and directory."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the thread that started it dies, even by SIGKILL.

    Runs in the child between fork and exec. Elsewhere (or if prctl is unavailable) it does nothing and the
    pid files are the fallback. Linux ties the signal to the starting thread, not the process: start
    long-running children from a thread that lives as long as they should.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def spawn(spec: ProcessSpec, **popen_options) -> subprocess.Popen:
    """Start `spec` in its own session with the parent-death signal; `popen_options` say where output goes."""
    return subprocess.Popen(
        list(spec.argv),
        cwd=spec.cwd,
        # Unbuffered so that output reaches the terminal or the log file line by line, as it happens.
        env={**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
        **popen_options,
    )


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


def process_name(pid: int) -> str:
    """The first word of a process's command line (its program), or "" when it cannot be read."""
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


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group `process` leads and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait()


class ProcessExited(DevstackError):
    """A process that should still be running has exited; the message holds the end of its output."""


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy and return that; TimeoutError after `timeout` seconds.

    `check`, when given, runs between polls and may raise to give up early (e.g. `LoggedProcess.check`, so that a
    wait for a process that already died fails at once instead of at the deadline).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class LoggedProcess:
    """A child whose output (stdout and stderr) goes to a log file, in its own process group.

    This is what test fixtures and benchmarks need from a Celery worker or a web server: start it, wait until its
    log says it is ready (or fail with the end of that log), check it is still alive, stop it and its children.
    """

    def __init__(self, spec: ProcessSpec, log_path: Path):
        self.name = spec.name
        self.argv = list(spec.argv)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the descriptor; this process does not need one once it started.
        with open(self.log_path, "wb") as log:
            self.process = spawn(spec, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        """The PID of the process (and the ID of its process group)."""
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code if the process has exited, else None."""
        return self.process.poll()

    def tail(self, chars: int = 3000) -> str:
        """The last `chars` characters of the log ("" if it cannot be read)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check(self) -> None:
        """Raise ProcessExited, with the end of the log, if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise ProcessExited(f"{self.name} exited with code {code}; the end of {self.log_path}:\n{self.tail()}")

    def find_line(self, text: str) -> str | None:
        """The first line of the log that contains `text`, or None."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return None
        needle = text.encode()
        at = data.find(needle)
        if at < 0:
            return None
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at + len(needle))
        # Never empty, so that a found line is always truthy for `wait_until`.
        return data[start : end if end >= 0 else len(data)].decode(errors="replace").rstrip("\r") or text

    def wait_for_line(self, text: str, timeout: float, interval: float = 0.2) -> str:
        """Wait until a line containing `text` (e.g. " ready.") is in the log and return that line.

        Raises ProcessExited as soon as the process exits without having written it, and TimeoutError after
        `timeout` seconds; both messages end with the end of the log.
        """
        if not text:
            raise ValueError("wait_for_line needs some text to look for")
        try:
            return wait_until(
                lambda: self.find_line(text),
                timeout,
                f"{self.name} to write {text!r}",
                interval=interval,
                check=self.check,
            )
        except TimeoutError as error:
            raise TimeoutError(f"{error}; the end of {self.log_path}:\n{self.tail()}") from None

    def stop(self, grace: float = 10.0, signum: int = signal.SIGTERM, group: bool = False) -> int:
        """Send `signum` (to the leader, or to the whole group if `group`), wait `grace` s, SIGKILL the group.

        The final SIGKILL reaches whatever the process left in its group even when the leader exited on its
        own. Returns the leader's exit code.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(self.process.pid, signum)
                else:
                    self.process.send_signal(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        kill_group(self.process)
        return self.process.returncode

    def __enter__(self) -> LoggedProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_logged(spec: ProcessSpec, log_path: Path) -> LoggedProcess:
    """Start `spec` in its own process group with its output written to `log_path` (truncated first)."""
    return LoggedProcess(spec, log_path)
