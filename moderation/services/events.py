"""Events for the marketplace, written in the same transaction as the change they describe.

`emit` is called by the service that makes the change (scoring, review, listings, appeals), inside its
transaction: a rolled-back change leaves no event, a committed one always has its event. Each event carries a
sequence number per listing, taken from the listing row under its lock, so a receiver can order what arrives out of
order. Once committed, the relay (`services.relay`) gives events their feed position and queues webhook deliveries.

Payloads say what the marketplace needs to act and nothing it should not see: a moderator appears as a stable
pseudonym, never by name or id.
"""

import hashlib
import hmac

from django.conf import settings
from django.db import connection

from moderation import clock, outbox
from moderation.models import Decision, Event, EventType, Listing, ListingImage, Score


def emit(*, type: str, listing: Listing, data: dict) -> Event:
    """Record that `type` happened to `listing` (inside the caller's transaction) and have it relayed on commit."""
    event = Event.objects.create(
        type=type,
        client_id=listing.client_id,
        listing=listing,
        external_id=listing.external_id,
        sequence=next_sequence(listing.pk),
        occurred_at=clock.now(),
        data=data,
    )
    outbox.send_once_on_commit(outbox.RELAY_EVENTS)
    return event


def next_sequence(listing_id: int) -> int:
    """Increment the listing's event counter and read it in one statement; the row stays locked until commit.

    Every event of a listing takes its number here, and a scoring batch emits one or two per photo: one
    `UPDATE ... RETURNING` (PostgreSQL, and SQLite since 3.35) instead of an update and a read saves a round trip
    on each. The update's row lock is what keeps two transactions from taking the same number.
    """
    quote = connection.ops.quote_name
    table = quote(Listing._meta.db_table)
    column = quote(Listing._meta.get_field("event_sequence").column)
    key = quote(Listing._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = {column} + 1 WHERE {key} = %s RETURNING {column}", [listing_id])
        row = cursor.fetchone()
    if row is None:
        raise Listing.DoesNotExist(f"listing {listing_id} does not exist")
    return int(row[0])


def moderator_pseudonym(user_id: int) -> str:
    """A stable id for a moderator that says nothing about who they are (keyed with the site's SECRET_KEY)."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"moderator:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"mod_{digest[:16]}"


def image_scored(*, image: ListingImage, score: Score, rescored: bool, previous_status: str) -> Event:
    """`image.scored` (first routing) or `image.rescored` (a new model routed an open image again)."""
    data = {
        "image_id": image.pk,
        "status": image.status,
        "model_version": score.model_version,
        "probabilities": score.probabilities,
        "prohibited_probability": score.prohibited_probability,
        "prohibited_label": score.prohibited_label,
        "audit_sample": image.is_audit,
    }
    if rescored:
        data["previous_status"] = previous_status
    return emit(type=EventType.IMAGE_RESCORED if rescored else EventType.IMAGE_SCORED, listing=image.listing, data=data)


def image_failed(*, image: ListingImage) -> Event:
    """`image.failed`: scoring gave up on the image; its listing needs attention until a moderator acts."""
    return emit(
        type=EventType.IMAGE_FAILED,
        listing=image.listing,
        data={"image_id": image.pk, "attempts": image.attempts, "reason": image.last_error[:500]},
    )


def failed_image_handled(*, image: ListingImage, moderator_id: int, sent_to_review: bool) -> Event:
    """`image.retried` (it is scored again) or `image.sent_to_review` (a moderator will look at it unscored).

    Either follows an `image.failed`, so the marketplace knows the image is moving again and who moved it
    (pseudonymously); `reason` is the error scoring gave up on.
    """
    return emit(
        type=EventType.IMAGE_SENT_TO_REVIEW if sent_to_review else EventType.IMAGE_RETRIED,
        listing=image.listing,
        data={
            "image_id": image.pk,
            "status": image.status,
            "reason": image.last_error[:500],
            "moderator": moderator_pseudonym(moderator_id),
        },
    )


def decision_data(decision: Decision) -> dict:
    """What the marketplace learns of a decision: the verdict, its ground, who (pseudonymously; no one when a bank
    match or the model's auto-action decided it, `automated`) and when."""
    return {
        "image_id": decision.image_id,
        "decision_id": decision.pk,
        "outcome": decision.outcome,
        "policy_category": decision.policy_category,
        "moderator": moderator_pseudonym(decision.moderator_id) if decision.moderator_id else None,
        "automated": decision.automated,
        "decided_at": decision.created_at.isoformat(),
        "via_appeal": decision.appeal_id is not None,
    }


def image_decided(*, decision: Decision) -> Event:
    """`image.decided`: a moderator confirmed (prohibited) or rejected (false positive) an image."""
    return emit(type=EventType.IMAGE_DECIDED, listing=decision.image.listing, data=decision_data(decision))


def decision_undone(*, decision: Decision) -> Event:
    """`decision.undone`: the moderator took the decision back; the image is in review again."""
    data = {**decision_data(decision), "undone_at": decision.undone_at.isoformat()}
    return emit(type=EventType.DECISION_UNDONE, listing=decision.image.listing, data=data)


def listing_status_changed(*, listing: Listing, before: str, after: str) -> Event:
    """`listing.status_changed`: from one `ListingStatus` to another."""
    return emit(type=EventType.LISTING_STATUS_CHANGED, listing=listing, data={"from": before, "to": after})
