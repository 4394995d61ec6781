"""Shared fixtures. Tests never reach the internet and never load a model at import time."""

import pytest

from moderation import clock


@pytest.fixture
def frozen_clock():
    """A clock the test moves by hand: `frozen_clock.advance(seconds=...)`."""
    from datetime import timedelta

    from django.utils import timezone

    class FrozenClock:
        def __init__(self):
            self.current = timezone.now()

        def __call__(self):
            return self.current

        def advance(self, **delta):
            self.current += timedelta(**delta)

    fake = FrozenClock()
    clock.set_now(fake)
    yield fake
    clock.set_now(None)
