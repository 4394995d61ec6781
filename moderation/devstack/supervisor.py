"""`Supervisor`: start the processes of a run, show their output or log it to files, and stop them all together.

`make run` must leave nothing behind when it stops: Ctrl-C must stop every process the desk started, Celery's
pool children included. Each child therefore runs in its own process group (see `processes`) and the supervisor
stops whole groups, politely first and forcibly after a grace period. Benchmarks and test fixtures use the same
supervisor with `start_logged`, which sends a child's output to a log file they can wait on.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from moderation.devstack.processes import LoggedProcess, ProcessExited, ProcessSpec, kill_group, spawn, start_logged

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
        self.logged: dict[str, LoggedProcess] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._width = 8

    def log(self, name: str, line: str) -> None:
        """Write one line to the output, prefixed with `name` (thread-safe)."""
        with self._lock:
            self.output.write(f"{name:<{self._width}} | {line}\n")
            self.output.flush()

    def start(self, spec: ProcessSpec) -> subprocess.Popen:
        """Start `spec` with its output copied, line by line and prefixed with its name, to the output."""
        self._width = max(self._width, len(spec.name))
        process = spawn(spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
        self.processes[spec.name] = process
        thread = threading.Thread(target=self._pump, args=(spec.name, process), daemon=True)
        thread.start()
        self._threads.append(thread)
        self.log(spec.name, f"started (pid {process.pid}): {' '.join(spec.argv)}")
        return process

    def start_logged(self, spec: ProcessSpec, log_path: Path) -> LoggedProcess:
        """Start `spec` with its output in `log_path` instead of the output; it is stopped with the others."""
        self._width = max(self._width, len(spec.name))
        logged = start_logged(spec, log_path)
        self.processes[spec.name] = logged.process
        self.logged[spec.name] = logged
        self.log(spec.name, f"started (pid {logged.pid}), output in {log_path}: {' '.join(spec.argv)}")
        return logged

    def _pump(self, name: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not any(marker in line for marker in NOISE):
                self.log(name, line.rstrip("\n"))

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
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
        """The children that have exited, with their exit codes."""
        return [(name, p.returncode) for name, p in self.processes.items() if p.poll() is not None]

    def check(self) -> None:
        """Raise ProcessExited if any child has exited (with the end of its log when it has one)."""
        for name, code in self.exited():
            if name in self.logged:
                self.logged[name].check()
            raise ProcessExited(f"{name} exited with code {code}")

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
            kill_group(process)
            self.log(name, f"stopped (exit {process.returncode})")
        for thread in self._threads:
            thread.join(timeout=1)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_all()
