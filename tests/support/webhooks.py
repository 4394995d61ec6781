"""Webhook rows for tests: a client with an endpoint pointed at a test receiver, and events relayed to it."""

from standardwebhooks import Webhook

from moderation.models import Client, Event, EventType, Listing, WebhookDelivery, WebhookEndpoint
from moderation.services import events, relay
from moderation.services.webhooks.endpoints import add_endpoint


def client_endpoint(url: str, client_name: str = "acme", **options) -> tuple[WebhookEndpoint, str]:
    """An endpoint of a client (created if new) at `url`, and its secret."""
    client, _ = Client.objects.get_or_create(name=client_name)
    return add_endpoint(client=client, url=url, **options)


def relayed_events(endpoint: WebhookEndpoint, count: int, listing: Listing | None = None) -> list[Event]:
    """`count` events on one listing of the endpoint's client, committed and relayed (one delivery each)."""
    listing = listing or Listing.objects.create(client=endpoint.client, external_id=f"ad-{Listing.objects.count()}")
    made = [
        events.emit(type=EventType.LISTING_STATUS_CHANGED, listing=listing, data={"from": "pending", "to": str(n)})
        for n in range(count)
    ]
    relay.relay_events()
    return made


def deliveries(endpoint: WebhookEndpoint):
    """The endpoint's deliveries in event order."""
    return WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event").order_by("event__position", "id")


def verify(secret: str, received) -> dict:
    """The event a received request carries, verified with `standardwebhooks` (raises if the signature is wrong)."""
    return Webhook(secret).verify(received.body, received.headers)
