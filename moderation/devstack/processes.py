"""Process-level helpers of the local stack: PIDs, process groups, the parent-death signal, `ProcessSpec`.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
