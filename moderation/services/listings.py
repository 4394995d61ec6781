"""Listing status, derived from its images so it can never disagree with them."""

from moderation.models import ImageStatus, Listing, ListingStatus


def derive_listing_status(image_statuses: list[str]) -> str:
    """A confirmed image takes the listing down; anything unresolved keeps it in review or scoring."""
    statuses = set(image_statuses)
    if ImageStatus.CONFIRMED in statuses:
        return ListingStatus.TAKEN_DOWN
    if ImageStatus.PENDING in statuses:
        return ListingStatus.PENDING
    if statuses & {ImageStatus.FLAGGED, ImageStatus.FAILED}:
        return ListingStatus.IN_REVIEW
    return ListingStatus.LIVE


def refresh_listing_status(listing_id: int) -> str:
    """Recompute and store a listing's status; call inside the transaction that changed an image."""
    statuses = list(Listing.objects.get(pk=listing_id).images.values_list("status", flat=True))
    status = derive_listing_status(statuses)
    Listing.objects.filter(pk=listing_id).exclude(status=status).update(status=status)
    return status
