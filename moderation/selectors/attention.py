"""Reads for the Needs attention page: images scoring gave up on, and those waiting to be retried after an
infrastructure error.

Failed images are few (each is a poison image or a bug), so they are listed oldest failure first, keyset-paged
(`paging.oldest_first`) like the Appeals queue; the count in the navigation is one indexed count
(`image_status_idx`). Images backing off are not a moderator's to act on (the sweeper retries them), but a file
that stays unreadable would otherwise retry quietly forever, so the page shows them too.
"""

from dataclasses import dataclass

from moderation.models import ImageStatus, ListingImage
from moderation.selectors.paging import oldest_first

PAGE_SIZE = 50
#: Images backing off shown at most; the page gives the total.
RETRYING_SHOWN = 20


@dataclass
class AttentionPage:
    """Failed images, oldest failure first, `next_cursor` to continue after; and the images backing off."""

    images: list[ListingImage]
    next_cursor: int | None
    failed_count: int
    retrying: list[ListingImage]
    retrying_count: int


def failed_count() -> int:
    """How many images need a moderator (the number in the navigation)."""
    return ListingImage.objects.filter(status=ImageStatus.FAILED).count()


def attention_page(after: int | None = None, limit: int | None = None) -> AttentionPage:
    """One page of failed images with their listing, after the failed image `after` (an id), plus those retrying."""
    failed = ListingImage.objects.filter(status=ImageStatus.FAILED)
    count = failed.count()
    rows, next_cursor = oldest_first(
        failed.select_related("listing"), stamp="failed_at", after=after, limit=limit or PAGE_SIZE
    )
    retrying = ListingImage.objects.filter(
        status__in=[ImageStatus.PENDING, ImageStatus.FLAGGED], next_attempt_at__isnull=False
    )
    return AttentionPage(
        images=rows,
        next_cursor=next_cursor,
        failed_count=count,
        retrying=list(retrying.select_related("listing").order_by("next_attempt_at", "id")[:RETRYING_SHOWN]),
        retrying_count=retrying.count(),
    )
