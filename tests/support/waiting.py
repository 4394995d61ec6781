"""One way for a test to wait for something another process does (a worker scoring, a run finishing)."""

import time
from collections.abc import Callable

import pytest

from moderation.devstack import processes


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, worker=None, interval=0.2) -> float:
    """Poll `condition` until it is truthy and return the seconds it took; else fail the test naming `what`.

    With a `worker` (`tests.support.workers.Worker`) the failure shows the end of its log, where the reason
    usually is.
    """
    started = time.monotonic()
    try:
        processes.wait_until(condition, timeout, what, interval=interval)
    except TimeoutError as error:
        tail = f"; worker log tail:\n{worker.process.tail(4000)}" if worker is not None else ""
        pytest.fail(f"{error}{tail}")
    return time.monotonic() - started
