"""The review desk's writes: claim work with a lease, renew or release it, decide, and undo.

Every function runs in one transaction and locks the image row it changes, so two tabs, two moderators or a
double click can never both win. Time comes from `moderation.clock` so tests can expire leases and undo windows.
"""

from collections.abc import Sequence
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q

from moderation import clock
from moderation.models import AuditAction, Decision, DecisionOutcome, ImageStatus, ListingImage, PolicyCategory
from moderation.selectors.queue import QUEUE_ORDER, UNDO_WINDOW
from moderation.selectors.settings import get_settings
from moderation.services import audit, banks, events
from moderation.services.labels import label_or_blank
from moderation.services.listings import refresh_listing_status
from moderation.services.training.trigger import record_decision, withdraw_decision


class ReviewError(Exception):
    """A review action that cannot happen in the item's current state; views answer 409."""

    code = "conflict"


class StaleClaim(ReviewError):
    """The claim is someone else's or has expired: another moderator may be looking at the item."""

    code = "stale_claim"


class AlreadyDecided(ReviewError):
    """The item already has a live decision (a double submit, or a second tab)."""

    code = "already_decided"


class UndoNotAllowed(ReviewError):
    """The decision is already undone, not the requester's, or older than the undo window."""

    code = "undo_not_allowed"


def _lease() -> timedelta:
    return timedelta(seconds=get_settings().claim_lease_seconds)


def claim_next(*, user, exclude_ids: Sequence[int] = ()) -> ListingImage | None:
    """Give `user` the next flagged item, or the one they already hold, under a lease.

    `skip_locked` lets concurrent moderators walk past each other's rows instead of waiting on them, and the
    claim columns keep the item reserved after the transaction ends. `exclude_ids` are items this moderator
    skipped, so "next" does not hand the same item straight back.
    """
    lease = _lease()
    with transaction.atomic():
        now = clock.now()
        if exclude_ids:
            # One live claim per moderator: a skipped item goes back to the queue for someone else.
            ListingImage.objects.filter(pk__in=list(exclude_ids), claimed_by=user, status=ImageStatus.FLAGGED).update(
                claimed_by=None, claim_expires_at=None
            )
        held = (
            ListingImage.objects.select_for_update(skip_locked=True)
            .filter(status=ImageStatus.FLAGGED, duplicate_of__isnull=True, claimed_by=user, claim_expires_at__gt=now)
            .exclude(pk__in=list(exclude_ids))
            .order_by(*QUEUE_ORDER)
            .first()
        )
        image = held or (
            ListingImage.objects.select_for_update(skip_locked=True)
            .filter(status=ImageStatus.FLAGGED, duplicate_of__isnull=True)
            .filter(Q(claimed_by__isnull=True) | Q(claim_expires_at__lte=now) | Q(claim_expires_at__isnull=True))
            .exclude(pk__in=list(exclude_ids))
            .order_by(*QUEUE_ORDER)
            .first()
        )
        if image is None:
            return None
        image.claimed_by = user
        image.claim_expires_at = now + lease
        image.save(update_fields=["claimed_by", "claim_expires_at"])
        return image


def claim_item(*, user, image_id: int) -> ListingImage:
    """Claim one specific item for a full lease: renew it if it is ours, take it (back) if it is free.

    Opening an item page calls this, and so does the page's keep-alive ping: a moderator whose lease lapsed
    (a sleeping laptop, a reload racing its own release beacon) gets the item back unless someone else took it.
    Raises `StaleClaim` when another moderator holds a live lease, `AlreadyDecided` when it left the queue.
    """
    lease = _lease()
    with transaction.atomic():
        image = ListingImage.objects.select_for_update().get(pk=image_id)
        now = clock.now()
        if image.status != ImageStatus.FLAGGED:
            raise AlreadyDecided(f"Image {image.pk} is {image.status}, not waiting for review.")
        held_by_other = image.claimed_by_id not in (None, user.pk)
        if held_by_other and image.claim_expires_at is not None and image.claim_expires_at > now:
            raise StaleClaim(f"Image {image.pk} is being reviewed by someone else.")
        # One live claim per moderator: opening another item gives the previous one back to the queue.
        ListingImage.objects.filter(claimed_by=user, status=ImageStatus.FLAGGED).exclude(pk=image.pk).update(
            claimed_by=None, claim_expires_at=None
        )
        image.claimed_by = user
        image.claim_expires_at = now + lease
        image.save(update_fields=["claimed_by", "claim_expires_at"])
        return image


def release_claim(*, user, image_id: int) -> bool:
    """Give an item back to the queue when its moderator leaves the page; a no-op if the claim is not theirs."""
    released = ListingImage.objects.filter(pk=image_id, claimed_by=user, status=ImageStatus.FLAGGED).update(
        claimed_by=None, claim_expires_at=None
    )
    return bool(released)


def _check_claim(image: ListingImage, user) -> None:
    if image.status != ImageStatus.FLAGGED:
        raise AlreadyDecided(f"Image {image.pk} is {image.status}, not waiting for review.")
    if image.claimed_by_id != user.pk or image.claim_expires_at is None or image.claim_expires_at <= clock.now():
        raise StaleClaim(f"Your claim on image {image.pk} has expired or belongs to someone else.")


def decide(*, user, image_id: int, outcome: str, policy_category: str = "", note: str = "") -> Decision:
    """Record a moderator's verdict on a claimed item and apply it, to its near-duplicate group as well.

    Confirm takes the listing down; reject returns the image to the cleared side. The decision also becomes
    training data and a bank entry in the same transaction, so a rolled-back decision never trains a model or
    matches a copy. When the item leads a near-duplicate group, every member still waiting gets its own decision,
    marked as applied from this one. Raises `StaleClaim` or `AlreadyDecided` (both 409 to the browser); nothing is
    stored then.
    """
    if outcome not in DecisionOutcome.values:
        raise ValueError(f"Unknown outcome {outcome!r}.")
    if policy_category and policy_category not in PolicyCategory.values:
        raise ValueError(f"Unknown policy category {policy_category!r}.")
    policy_category = policy_category or (
        PolicyCategory.NONE if outcome == DecisionOutcome.REJECT else PolicyCategory.PROHIBITED_ITEM
    )
    with transaction.atomic():
        image = ListingImage.objects.select_for_update().select_related("listing").get(pk=image_id)
        _check_claim(image, user)
        verdict = {"user": user, "outcome": outcome, "policy_category": policy_category, "note": note}
        # Read before the lead leaves the queue, which hands its group to the next member.
        members = list(
            ListingImage.objects.select_for_update()
            .select_related("listing")
            .filter(status=ImageStatus.FLAGGED, duplicate_of=image)
            .order_by("pk")
        )
        try:
            with transaction.atomic():
                decision = _apply(image=image, **verdict)
        except IntegrityError as exc:
            # The one_live_decision constraint: a concurrent submit got there first.
            raise AlreadyDecided(f"Image {image.pk} already has a decision.") from exc
        for member in members:
            _apply(image=member, applied_from=decision, **verdict)
        return decision


def _apply(*, image: ListingImage, user, outcome: str, policy_category: str, note: str, applied_from=None) -> Decision:
    """One image's decision with everything that follows from it: status, event, listing, training, bank, audit."""
    now = clock.now()
    decision = Decision.objects.create_at(
        now,
        image=image,
        moderator=user,
        outcome=outcome,
        policy_category=policy_category,
        label=label_or_blank(outcome=outcome, flagged_label=image.prohibited_label),
        note=note,
        model_version=image.model_version,
        prohibited_probability=image.prohibited_probability,
        was_audit=image.is_audit,
        audit_probability=image.audit_probability,
        applied_from=applied_from,
    )
    if outcome == DecisionOutcome.CONFIRM:
        image.status, image.confirmed_at = ImageStatus.CONFIRMED, now
    else:
        image.status, image.rejected_at = ImageStatus.REJECTED, now
    image.claimed_by, image.claim_expires_at = None, None
    image.save(update_fields=["status", "confirmed_at", "rejected_at", "claimed_by", "claim_expires_at"])
    events.image_decided(decision=decision)
    refresh_listing_status(image.listing_id)
    record_decision(decision=decision)
    banks.bank_decision(decision=decision)
    audit.record(
        action=AuditAction.DECISION_MADE,
        obj=decision,
        actor=user,
        after={
            "image": image.pk,
            "outcome": outcome,
            "policy_category": decision.policy_category,
            "label": decision.label,
            **({"applied_from": applied_from.pk} if applied_from else {}),
        },
        note=note,
    )
    return decision


def undo_decision(*, user, decision_id: int) -> ListingImage:
    """Withdraw a decision within the undo window: the image is flagged again and claimed back by its moderator.

    A decision taken on a near-duplicate group takes the whole group back: every decision applied from it is
    undone too and its image rejoins the group. The rows stay (stamped `undone_at`) so the audit trail shows both
    the decisions and their undo.
    """
    with transaction.atomic():
        decision = Decision.objects.select_related("image").get(pk=decision_id)
        image = ListingImage.objects.select_for_update().get(pk=decision.image_id)
        decision.refresh_from_db()
        now = clock.now()
        if decision.undone_at is not None:
            raise UndoNotAllowed("This decision was already undone.")
        if decision.moderator_id != user.pk:
            raise UndoNotAllowed("Only the moderator who decided can undo.")
        if now - decision.created_at > UNDO_WINDOW:
            raise UndoNotAllowed(f"Decisions can be undone for {int(UNDO_WINDOW.total_seconds())} seconds only.")
        # The item handed out after the decision goes back to the queue: one live claim per moderator.
        ListingImage.objects.filter(claimed_by=user, status=ImageStatus.FLAGGED).exclude(pk=image.pk).update(
            claimed_by=None, claim_expires_at=None
        )
        _take_back(decision, image, user=user, now=now, lead=None)
        image.claimed_by, image.claim_expires_at = user, now + _lease()
        image.save(update_fields=["claimed_by", "claim_expires_at"])
        applied = decision.applied_to.filter(undone_at__isnull=True).select_related("image").order_by("image_id")
        for member_decision in applied:
            member = ListingImage.objects.select_for_update().get(pk=member_decision.image_id)
            _take_back(member_decision, member, user=user, now=now, lead=image)
        return image


def _take_back(decision: Decision, image: ListingImage, *, user, now, lead: ListingImage | None) -> None:
    """Undo one decision: the image waits for review again (in `lead`'s group), and nothing it taught stays."""
    decision.undone_at = now
    decision.save(update_fields=["undone_at"])
    image.status = ImageStatus.FLAGGED
    image.confirmed_at, image.rejected_at = None, None
    image.duplicate_of = lead
    image.save(update_fields=["status", "confirmed_at", "rejected_at", "duplicate_of"])
    events.decision_undone(decision=decision)
    refresh_listing_status(image.listing_id)
    withdraw_decision(decision=decision)
    banks.unbank_decision(decision=decision, reason="Decision undone.")
    audit.record(
        action=AuditAction.DECISION_UNDONE,
        obj=decision,
        actor=user,
        before={"outcome": decision.outcome},
        after={"undone_at": decision.undone_at},
    )
