"""Outbox and event relays, on the default queue: cheap, idempotent, run on commit and by beat every few seconds."""

from celery import shared_task

from moderation import outbox
from moderation.services import relay


@shared_task(name=outbox.RELAY_OUTBOX, ignore_result=True)
def relay_outbox() -> int:
    """Beat: publish the tasks whose publish failed or never happened (the broker was down)."""
    return outbox.relay_outbox()


@shared_task(name=outbox.RELAY_EVENTS, ignore_result=True)
def relay_events() -> int:
    """On commit and by beat: give committed events their feed position and queue their webhook deliveries."""
    return relay.relay_events()
