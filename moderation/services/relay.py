"""The event relay: committed events get their feed position, and a webhook delivery per subscribed endpoint.

Events are written inside the transactions of the changes they describe, so their ids are handed out before
they commit: a transaction that started first can commit last. Paging the feed by id would then skip an event
that committed after a reader had moved past its id. The relay instead numbers events as it sees them committed,
one relay at a time (it holds the `EventRelayState` row lock while it numbers), so feed positions only ever grow
in commit order and a reader that pages by position sees every event at least once.

Runs on commit of every transaction that wrote events (deduplicated per transaction) and from beat every few
seconds, which also repairs a relay message lost with a broker outage.

Test events are left alone: an admin sends one to one endpoint (`services.webhooks.endpoints.send_test_event`), so
it is neither numbered into the feed nor fanned out to the client's other endpoints.
"""

from django.db import transaction

from moderation import clock, outbox
from moderation.models import Event, EventRelayState, EventType, WebhookDelivery, WebhookEndpoint

RELAY_BATCH = 500


def relay_events(*, limit: int = RELAY_BATCH) -> int:
    """Number the committed events nobody numbered yet and queue their webhook deliveries; returns how many."""
    with transaction.atomic():
        state, _ = EventRelayState.objects.select_for_update().get_or_create(pk=1)
        batch = list(Event.objects.filter(position__isnull=True).exclude(type=EventType.TEST).order_by("id")[:limit])
        if not batch:
            return 0
        now = clock.now()
        position = state.last_position
        for event in batch:
            position += 1
            event.position, event.relayed_at = position, now
        Event.objects.bulk_update(batch, ["position", "relayed_at"])
        state.last_position = position
        state.save(update_fields=["last_position"])
        endpoints = _subscribed_endpoints({event.client_id for event in batch})
        deliveries = [
            WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=now)
            for event in batch
            for endpoint in endpoints.get(event.client_id, ())
            if endpoint.wants(event.type)
        ]
        WebhookDelivery.objects.bulk_create(deliveries)
        for endpoint_id in sorted({delivery.endpoint_id for delivery in deliveries}):
            outbox.send_on_commit(outbox.DELIVER_WEBHOOKS, endpoint_id)
        if len(batch) == limit:
            outbox.send_once_on_commit(outbox.RELAY_EVENTS)
    return len(batch)


def _subscribed_endpoints(client_ids: set[int]) -> dict[int, list[WebhookEndpoint]]:
    by_client: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(client_id__in=client_ids, is_enabled=True).order_by("id"):
        by_client.setdefault(endpoint.client_id, []).append(endpoint)
    return by_client
