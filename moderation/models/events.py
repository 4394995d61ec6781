"""What the desk tells the marketplace, and the tasks it owes its workers: both written in the transaction of the
change they describe (transactional outboxes), so nothing committed is ever left unsaid.

`Event` rows are the results queue back to the marketplace: pushed as signed webhooks and readable as a
cursor-ordered feed. Their `position` is given by the relay once they are committed, in the order it sees them, so
a reader that pages by position never skips an event that committed late. `OutboxMessage` rows are Celery tasks
waiting to be published: a broker outage leaves them here, and the relay publishes them once it is back.
"""

import uuid

from django.db import models
from django.db.models import Q


class EventType(models.TextChoices):
    """What happened, as the marketplace's systems see it."""

    IMAGE_SCORED = "image.scored", "An image was scored and routed"
    IMAGE_RESCORED = "image.rescored", "A new model routed an open image differently"
    IMAGE_FAILED = "image.failed", "An image could not be scored"
    IMAGE_RETRIED = "image.retried", "A moderator had a failed image scored again"
    IMAGE_SENT_TO_REVIEW = "image.sent_to_review", "A moderator sent a failed image to human review"
    IMAGE_MATCHED = "image.matched", "An image matched a hash bank entry"
    IMAGE_DECIDED = "image.decided", "A moderator confirmed or rejected an image"
    DECISION_UNDONE = "decision.undone", "A moderator took a decision back"
    LISTING_STATUS_CHANGED = "listing.status_changed", "A listing's status changed"
    APPEAL_RECEIVED = "appeal.received", "A seller's appeal was received"
    APPEAL_DECIDED = "appeal.decided", "An appeal was upheld or the decision overturned"
    TEST = "test", "A test event sent by an admin"


class Event(models.Model):
    """One thing that happened to one client's listing, with a sequence number per listing for ordering."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    type = models.CharField(max_length=40, choices=EventType.choices)
    client = models.ForeignKey("Client", on_delete=models.PROTECT, related_name="events")
    listing = models.ForeignKey("Listing", null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    external_id = models.CharField(max_length=200, blank=True)
    sequence = models.PositiveBigIntegerField(default=0, help_text="Per listing: 1, 2, 3, ... in the order written.")
    occurred_at = models.DateTimeField()
    data = models.JSONField(default=dict)
    position = models.PositiveBigIntegerField(
        null=True, blank=True, unique=True, help_text="Feed order, given by the relay once the event is committed."
    )
    relayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["client", "position"], name="event_feed_idx"),
            models.Index(fields=["id"], name="event_unrelayed_idx", condition=Q(position__isnull=True)),
        ]

    def __str__(self):
        return f"{self.type} #{self.pk}"

    @property
    def public_id(self) -> str:
        """The id receivers see (`webhook-id`): the same on every delivery attempt of this event."""
        return f"evt_{self.uid.hex}"


class EventRelayState(models.Model):
    """The relay's single row (pk=1): the last feed position given, locked while positions are handed out."""

    last_position = models.PositiveBigIntegerField(default=0)

    def __str__(self):
        return f"relay at position {self.last_position}"


class OutboxMessage(models.Model):
    """A Celery task to publish: written with the change that needs it, sent once that change has committed."""

    task_name = models.CharField(max_length=100)
    args = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["id"], name="outbox_unpublished_idx", condition=Q(published_at__isnull=True))]

    def __str__(self):
        return f"{self.task_name}{tuple(self.args)}"
