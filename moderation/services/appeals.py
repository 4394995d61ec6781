"""Sellers' appeals of a takedown, and the review that upholds or overturns it.

The EU Digital Services Act gives a seller whose listing was taken down a way to contest it, decided by someone
other than whoever took the decision, with reasons. `file_appeal` records the seller's statement against the
listing's live confirmations (confirmed, not undone) within the appeal window; `decide_appeal` lets another
moderator or an admin uphold the takedown or overturn it.

An overturn never rewrites history. Each contested confirmation is stamped `undone_at` (it no longer counts) and
`overturned_at` (a correction in its moderator's record), and the reviewer makes a new rejection that `overturns`
it through this `appeal`. The training example follows through the trigger, like an undo followed by a new
decision: it moves to the allowed label and to the new decision, so example -> new decision -> overturned decision
tells what the image was first called, by whom, and who corrected it and why. The listing is restored by
recomputing its status from its images.

Every write happens in one transaction with the rows locked (the listing while filing, the appeal and the
contested images while deciding), so a double submit files one appeal and two reviewers deciding at once store one
outcome. Events are written in the same transaction, in this order: `appeal.received` when filed; on an overturn
one `image.decided` per restored image (`via_appeal`), then `listing.status_changed`, then `appeal.decided`.

What the events carry: ids, statuses and times, and on a decision the reviewer's note (the statement of reasons the
marketplace must pass on to its seller) and a pseudonym for the reviewer. Never the seller's own text: the
marketplace already has it (the seller wrote it on its site), and copying a person's statement into every webhook
delivery, log and receiver is data the receivers do not need.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction

from moderation import clock
from moderation.models import (
    APPEAL_TEXT_LIMIT,
    Appeal,
    AppealStatus,
    Client,
    Decision,
    DecisionOutcome,
    EventType,
    IdempotencyRecord,
    ImageStatus,
    Listing,
    ListingImage,
    PolicyCategory,
)
from moderation.permissions import is_moderator
from moderation.selectors.settings import get_settings
from moderation.services import banks, events
from moderation.services.ingest import idempotency_record, request_fingerprint
from moderation.services.labels import label_or_blank
from moderation.services.listings import refresh_listing_status
from moderation.services.training.trigger import record_decision, withdraw_decision

#: The reviewer's note is a statement of reasons for the seller: required, and short enough to read.
NOTE_LIMIT = 2000
UPHOLD, OVERTURN = "uphold", "overturn"


class AppealError(Exception):
    """An appeal action that cannot happen; `code` is the machine-readable reason the API and desk report."""

    code = "conflict"


class InvalidAppeal(AppealError):
    """The text or note is empty or too long, or the outcome is unknown (the API answers 400)."""

    code = "invalid"


class NothingToAppeal(AppealError):
    """The listing is not taken down: no confirmation of it is live (a live or withdrawn listing)."""

    code = "nothing_to_appeal"


class AppealWindowClosed(AppealError):
    """The appeal window (`appeal_window_days` after the latest contested confirmation) has passed."""

    code = "appeal_window_closed"

    def __init__(self, message: str, *, closed_at: datetime):
        super().__init__(message)
        self.closed_at = closed_at


class AlreadyAppealed(AppealError):
    """Every live confirmation of the listing is already contested by an appeal; `appeal` is the latest one."""

    code = "already_appealed"

    def __init__(self, message: str, *, appeal: Appeal):
        super().__init__(message)
        self.appeal = appeal


class NotAllowedToDecide(AppealError):
    """The user is no moderator, or made one of the contested decisions: an appeal needs another pair of eyes."""

    code = "not_allowed"


class AppealAlreadyDecided(AppealError):
    """The appeal was upheld or overturned already (a double submit, or a second reviewer)."""

    code = "already_decided"


@dataclass(frozen=True)
class Filing:
    """What `file_appeal` did: the appeal, and whether it was filed now or is the one a retried request filed."""

    appeal: Appeal
    created: bool


def _checked_text(text: str, *, what: str, limit: int) -> str:
    cleaned = (text or "").strip()
    if not cleaned:
        raise InvalidAppeal(f"The {what} is empty.")
    if len(cleaned) > limit:
        raise InvalidAppeal(f"The {what} has {len(cleaned)} characters; at most {limit} are accepted.")
    return cleaned


def window_closes_at(confirmations: Sequence[Decision]) -> datetime:
    """When an appeal of these confirmations stops being accepted: the window after the latest of them."""
    latest = max(decision.created_at for decision in confirmations)
    return latest + timedelta(days=get_settings().appeal_window_days)


def file_appeal(*, listing_id: int, client: Client, text: str, idempotency_key: str | None = None) -> Filing:
    """File a seller's appeal of a taken-down listing, contesting its live confirmations not yet appealed.

    `client` owns the listing (another client's listing is `Listing.DoesNotExist`, as if it did not exist). A
    request repeated with the same `idempotency_key` gets the appeal it filed (`created=False`); the same key with
    other text raises `services.ingest.IdempotencyKeyReused`. Raises `InvalidAppeal`, `NothingToAppeal`,
    `AlreadyAppealed` or `AppealWindowClosed`; nothing is stored then.
    """
    text = _checked_text(text, what="appeal text", limit=APPEAL_TEXT_LIMIT)
    fingerprint = request_fingerprint(operation=f"file_appeal:{listing_id}", fields={"text": text})
    with transaction.atomic():
        # The lock makes a concurrent second filing (or a retry racing its original) wait and then see this one.
        listing = Listing.objects.select_for_update().get(pk=listing_id, client=client)
        if idempotency_key:
            record = idempotency_record(client=client, key=idempotency_key, fingerprint=fingerprint)
            if record is not None and record.appeal is not None:
                return Filing(appeal=record.appeal, created=False)
        contested = _contestable(listing)
        now = clock.now()
        closes_at = window_closes_at(contested)
        if now > closes_at:
            raise AppealWindowClosed(
                f"The appeal window of listing {listing.pk} closed on {closes_at:%Y-%m-%d %H:%M %Z}.",
                closed_at=closes_at,
            )
        appeal = Appeal.objects.create(listing=listing, client=client, text=text)
        # auto_now_add stamps the wall clock; the desk's clock orders the queue and dates the event.
        Appeal.objects.filter(pk=appeal.pk).update(created_at=now)
        appeal.created_at = now
        appeal.contested.set(contested)
        if idempotency_key:
            try:
                with transaction.atomic():
                    IdempotencyRecord.objects.create(
                        client=client, key=idempotency_key, fingerprint=fingerprint, appeal=appeal
                    )
            except IntegrityError:
                # The key was just used for another request (another listing's appeal): that raises here.
                idempotency_record(client=client, key=idempotency_key, fingerprint=fingerprint)
                raise
        events.emit(
            type=EventType.APPEAL_RECEIVED,
            listing=listing,
            data={
                "appeal_id": appeal.pk,
                "status": appeal.status,
                "contested_image_ids": sorted(decision.image_id for decision in contested),
                "contested_decision_ids": sorted(decision.pk for decision in contested),
                "received_at": now.isoformat(),
                "window_closes_at": closes_at.isoformat(),
            },
        )
    return Filing(appeal=appeal, created=True)


def _contestable(listing: Listing) -> list[Decision]:
    """The listing's live confirmations no appeal contests yet; raises when there is nothing left to appeal."""
    live = list(
        Decision.objects.filter(image__listing=listing, outcome=DecisionOutcome.CONFIRM, undone_at__isnull=True)
        .prefetch_related("appeals")
        .order_by("image_id")
    )
    if listing.withdrawn_at is not None or not live:
        reason = "was withdrawn" if listing.withdrawn_at is not None else f"is {listing.status}"
        raise NothingToAppeal(f"Listing {listing.pk} {reason}: no takedown to appeal.")
    contestable = [decision for decision in live if not decision.appeals.all()]
    if not contestable:
        latest = max((appeal for decision in live for appeal in decision.appeals.all()), key=lambda a: a.pk)
        raise AlreadyAppealed(
            f"Listing {listing.pk}'s takedown was already appealed (appeal {latest.pk}, {latest.status}).",
            appeal=latest,
        )
    return contestable


def check_may_decide(*, user, contested: Iterable[Decision]) -> None:
    """Raise `NotAllowedToDecide` unless `user` is a moderator or admin who made none of the `contested` decisions."""
    if not is_moderator(user):
        raise NotAllowedToDecide("Only moderators and admins decide appeals.")
    if any(decision.moderator_id == user.pk for decision in contested):
        raise NotAllowedToDecide("You made a decision this appeal contests: another moderator must decide it.")


def decide_appeal(*, appeal_id: int, user, outcome: str, note: str) -> Appeal:
    """Uphold the takedown or overturn it, with a note for the seller; one reviewer wins, the rest are refused.

    Only a moderator or admin who made none of the contested decisions may decide (`NotAllowedToDecide`); a
    decided appeal raises `AppealAlreadyDecided`; an unknown outcome or an empty note raises `InvalidAppeal`.
    """
    if outcome not in (UPHOLD, OVERTURN):
        raise InvalidAppeal(f"Unknown outcome {outcome!r}: uphold or overturn.")
    note = _checked_text(note, what="note", limit=NOTE_LIMIT)
    with transaction.atomic():
        # The appeal's row lock is what makes a second reviewer wait, then find the appeal decided.
        appeal = Appeal.objects.select_for_update().select_related("listing").get(pk=appeal_id)
        contested = list(appeal.contested.order_by("image_id"))
        check_may_decide(user=user, contested=contested)
        if appeal.status != AppealStatus.OPEN:
            raise AppealAlreadyDecided(f"Appeal {appeal.pk} was already {appeal.status}.")
        now = clock.now()
        made: list[Decision] = []
        if outcome == OVERTURN:
            made = _overturn(appeal=appeal, contested=contested, user=user, note=note, now=now)
            refresh_listing_status(appeal.listing_id)
        appeal.status = AppealStatus.OVERTURNED if outcome == OVERTURN else AppealStatus.UPHELD
        appeal.decided_by, appeal.decided_at, appeal.note = user, now, note
        appeal.save(update_fields=["status", "decided_by", "decided_at", "note"])
        appeal.listing.refresh_from_db(fields=["status"])
        events.emit(
            type=EventType.APPEAL_DECIDED,
            listing=appeal.listing,
            data={
                "appeal_id": appeal.pk,
                "status": appeal.status,
                "note": note,
                "reviewer": events.moderator_pseudonym(user.pk),
                "decided_at": now.isoformat(),
                "restored_image_ids": [decision.image_id for decision in made],
                "overturned_decision_ids": [decision.overturns_id for decision in made],
                "listing_status": appeal.listing.status,
            },
        )
        return appeal


def _overturn(*, appeal: Appeal, contested: list[Decision], user, note: str, now: datetime) -> list[Decision]:
    """Replace each contested confirmation still live by the reviewer's rejection; returns the new decisions."""
    ids = [decision.image_id for decision in contested]
    # Images in id order, the order every other writer locks them in, so two writers never deadlock.
    images = {image.pk: image for image in ListingImage.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
    made = []
    for old in Decision.objects.filter(pk__in=[d.pk for d in contested], undone_at__isnull=True).order_by("image_id"):
        image = images[old.image_id]
        old.undone_at, old.overturned_at = now, now
        old.save(update_fields=["undone_at", "overturned_at"])
        withdraw_decision(decision=old)
        banks.unbank_decision(decision=old, reason=f"Overturned on appeal {appeal.pk}.")
        new = Decision.objects.create_at(
            now,
            image=image,
            moderator=user,
            outcome=DecisionOutcome.REJECT,
            policy_category=PolicyCategory.NONE,
            label=label_or_blank(outcome=DecisionOutcome.REJECT, flagged_label=image.prohibited_label),
            note=note,
            model_version=old.model_version,
            prohibited_probability=old.prohibited_probability,
            was_audit=old.was_audit,
            audit_probability=old.audit_probability,
            overturns=old,
            appeal=appeal,
        )
        image.status, image.rejected_at, image.confirmed_at = ImageStatus.REJECTED, now, None
        image.save(update_fields=["status", "rejected_at", "confirmed_at"])
        events.image_decided(decision=new)
        record_decision(decision=new)
        banks.bank_decision(decision=new)
        made.append(new)
    return made
