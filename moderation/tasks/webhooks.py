"""Webhook tasks: delivery on the `webhooks` queue (routed in settings), the dispatcher from beat. Thin: an endpoint
id in, the service does the work; a worker thread that sends keeps its connections alive between tasks."""

from dataclasses import asdict

from celery import shared_task

from moderation import outbox
from moderation.services.webhooks import delivery, dispatch


@shared_task(name=outbox.DELIVER_WEBHOOKS, ignore_result=True)
def deliver_webhooks(endpoint_id: int) -> dict:
    """Send the endpoint's due deliveries in order (the relay, a replay, the dispatcher or a full batch asks)."""
    return asdict(delivery.deliver_due(endpoint_id=endpoint_id))


@shared_task(name=outbox.DISPATCH_WEBHOOKS, ignore_result=True)
def dispatch_webhooks() -> dict:
    """Beat: hand due retries to the `webhooks` queue; disable endpoints that have failed for too long."""
    return asdict(dispatch.dispatch_due())
