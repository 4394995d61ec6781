"""Listing reads for the API, always within one client's listings: another client's listing does not exist here."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Prefetch

from moderation.models import Appeal, Client, Decision, ImageMatch, Listing, ListingImage, Score

MAX_PAGE = 200


def get_listing_detail(*, client: Client, listing_id: int) -> Listing:
    """A client's listing with its images, every score (newest first), the full decision history and its appeals.

    Raises `Listing.DoesNotExist` for an unknown id and for another client's listing alike (the API's 404).
    """
    images = ListingImage.objects.order_by("id").prefetch_related(
        Prefetch("scores", queryset=Score.objects.order_by("-created_at", "-id")),
        Prefetch("decisions", queryset=Decision.objects.order_by("created_at", "id")),
        Prefetch("matches", queryset=ImageMatch.objects.select_related("bank").order_by("distance", "id")),
    )
    appeals = Appeal.objects.order_by("created_at", "id").prefetch_related("contested")
    return Listing.objects.prefetch_related(
        Prefetch("images", queryset=images), Prefetch("appeals", queryset=appeals)
    ).get(pk=listing_id, client=client)


def client_listing(*, client: Client, listing_id: int) -> Listing:
    """The client's listing by id, without its history (`Listing.DoesNotExist` for others' and unknown ids)."""
    return Listing.objects.get(pk=listing_id, client=client)


@dataclass
class ListingPage:
    """One page of a client's listings, newest first, and the cursor of the next (None on the last page)."""

    listings: list[Listing]
    next_cursor: str | None


def listing_page(
    *,
    client: Client,
    external_id: str | None = None,
    status: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: int | None = None,
    limit: int = 50,
) -> ListingPage:
    """A client's listings, newest first, filtered, keyset-paged by id (the cursor is the last id seen)."""
    limit = max(1, min(limit, MAX_PAGE))
    rows = Listing.objects.filter(client=client).annotate(image_count=Count("images")).order_by("-id")
    if external_id is not None:
        rows = rows.filter(external_id=external_id)
    if status:
        rows = rows.filter(status=status)
    if created_after is not None:
        rows = rows.filter(created_at__gte=created_after)
    if created_before is not None:
        rows = rows.filter(created_at__lt=created_before)
    if cursor is not None:
        rows = rows.filter(id__lt=cursor)
    listings = list(rows[: limit + 1])
    more = len(listings) > limit
    listings = listings[:limit]
    return ListingPage(listings=listings, next_cursor=str(listings[-1].pk) if more else None)
