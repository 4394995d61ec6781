"""The one clock the app reads. Tests swap it (`clock.set_now(...)`) to move leases and SLAs in time."""

from collections.abc import Callable
from datetime import datetime

from django.utils import timezone

_now: Callable[[], datetime] = timezone.now


def now() -> datetime:
    """Return the current time from the clock in use; read it instead of `timezone.now` so tests can move time."""
    return _now()


def set_now(provider: Callable[[], datetime] | None) -> None:
    """Replace the clock (None restores the real one)."""
    global _now
    _now = provider or timezone.now
