"""Listing status, derived from its images so it can never disagree with them; and withdrawing a listing.

Every change of a listing's status is also an event for the marketplace (`listing.status_changed`), written in
the same transaction as the image change that caused it.
"""

from django.db import transaction

from moderation import clock
from moderation.models import AuditAction, ImageStatus, Listing, ListingImage, ListingStatus
from moderation.services import audit, events
from moderation.services.grouping import repair_listing

#: Images whose fate is still open: withdrawing their listing takes them out of the pipeline.
UNDECIDED = (ImageStatus.PENDING, ImageStatus.FLAGGED, ImageStatus.FAILED)


def derive_listing_status(image_statuses: list[str], *, withdrawn: bool = False) -> str:
    """A withdrawn listing stays withdrawn; a confirmed image takes it down; anything unresolved keeps it off live.

    A failed image outranks pending and flagged ones: nothing will move it on by itself, so the listing says it
    needs a person (the Needs attention page) rather than looking as if it were merely waiting its turn.
    """
    if withdrawn:
        return ListingStatus.WITHDRAWN
    statuses = set(image_statuses)
    if ImageStatus.CONFIRMED in statuses:
        return ListingStatus.TAKEN_DOWN
    if ImageStatus.FAILED in statuses:
        return ListingStatus.NEEDS_ATTENTION
    if ImageStatus.PENDING in statuses:
        return ListingStatus.PENDING
    if ImageStatus.FLAGGED in statuses:
        return ListingStatus.IN_REVIEW
    return ListingStatus.LIVE


def refresh_listing_status(listing_id: int) -> str:
    """Recompute and store a listing's status; call inside the transaction that changed an image.

    Its photos that stopped waiting for review leave their near-duplicate groups here too (`grouping`), since
    every change of a photo's status passes through this.
    """
    listing = Listing.objects.get(pk=listing_id)
    repair_listing(listing_id)
    statuses = list(listing.images.values_list("status", flat=True))
    status = derive_listing_status(statuses, withdrawn=listing.withdrawn_at is not None)
    if status != listing.status:
        Listing.objects.filter(pk=listing_id).update(status=status)
        events.listing_status_changed(listing=listing, before=listing.status, after=status)
    return status


def withdraw_listing(*, listing_id: int) -> Listing:
    """Take a listing out of moderation because the marketplace withdrew it; idempotent.

    Its undecided images leave the pipeline (the queue, a pending score, a failed one waiting for attention) and
    any claim on them is released; decisions already made and the training examples they produced are kept.
    """
    with transaction.atomic():
        listing = Listing.objects.select_for_update().get(pk=listing_id)
        if listing.withdrawn_at is None:
            now = clock.now()
            Listing.objects.filter(pk=listing.pk).update(withdrawn_at=now)
            ListingImage.objects.filter(listing=listing, status__in=UNDECIDED).update(
                status=ImageStatus.WITHDRAWN, withdrawn_at=now, claimed_by=None, claim_expires_at=None
            )
            refresh_listing_status(listing.pk)
            audit.record(action=AuditAction.LISTING_WITHDRAWN, obj=listing, after={"withdrawn_at": now})
    listing.refresh_from_db()
    return listing
