"""Pytest fixtures shared by every test package (registered as a plugin in `tests/conftest.py`)."""

import pytest

from moderation import clock, outbox
from tests.support.published import Published


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


@pytest.fixture
def published(monkeypatch) -> Published:
    """Every task the outbox publishes in this test, recorded by name instead of sent to Redis."""
    recorder = Published()
    monkeypatch.setattr(outbox, "publish", recorder)
    return recorder


@pytest.fixture
def queued(published) -> list:
    """The id lists of the scoring tasks published (after commit)."""
    return published[outbox.SCORE_IMAGES]
