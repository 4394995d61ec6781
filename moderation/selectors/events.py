"""The event feed: a client's events in feed order, for clients that poll instead of receiving webhooks.

The cursor is the feed position of the last event read. Positions are handed out by the relay in commit order, so
paging by them never skips an event; a reader that stores its cursor only after processing a page reads each event
at least once.
"""

from dataclasses import dataclass

from moderation.models import Client, Event

MAX_EVENTS = 500


@dataclass
class EventPage:
    """Events after a cursor, and the cursor to ask with next (the same one when nothing new has come)."""

    events: list[Event]
    next_cursor: str


def event_page(*, client: Client, after: int = 0, limit: int = 100) -> EventPage:
    """The client's events with a feed position after `after`, oldest first, at most `limit` (up to 500)."""
    limit = max(1, min(limit, MAX_EVENTS))
    events = list(
        Event.objects.filter(client=client, position__gt=after).select_related("client").order_by("position")[:limit]
    )
    return EventPage(events=events, next_cursor=str(events[-1].position if events else after))
