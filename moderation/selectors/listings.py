"""Listing reads for the API."""

from django.db.models import Prefetch

from moderation.models import Decision, Listing, ListingImage, Score


def get_listing_detail(listing_id: int) -> Listing:
    """A listing with its images, every score (newest first) and the full decision history, in four queries.

    Raises `Listing.DoesNotExist`.
    """
    images = ListingImage.objects.order_by("id").prefetch_related(
        Prefetch("scores", queryset=Score.objects.order_by("-created_at", "-id")),
        Prefetch("decisions", queryset=Decision.objects.order_by("created_at", "id")),
    )
    return Listing.objects.prefetch_related(Prefetch("images", queryset=images)).get(pk=listing_id)
