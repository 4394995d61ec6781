"""Reads for the review desk: the queue in priority order, its counters, an item, a listing.

The queue is ordered like the partial index `queue_lead_order_idx` (prohibited probability desc, then age, then id,
only flagged rows that lead their near-duplicate group or have none), and pages with a keyset cursor, so page one
costs the same with a hundred or a hundred thousand open items: PostgreSQL walks the index and stops after `limit`
rows. Images without a score (sent to human review after scoring failed on them) come first: NULLS FIRST is how a
descending index sorts on PostgreSQL, said out loud so SQLite agrees; they waited through every attempt already.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, F, Prefetch, Q
from django.utils.dateparse import parse_datetime

from moderation import clock
from moderation.models import Decision, ImageMatch, ImageStatus, Listing, ListingImage, ModelVersion, Score

QUEUE_ORDER = (F("prohibited_probability").desc(nulls_first=True), "created_at", "id")
#: How a cursor spells "no score" (an image sent to human review without one).
UNSCORED = "none"
PAGE_SIZE = 50
COUNT_CAP = 10_000
# How long a moderator can take a decision back: long enough for a slip of the key, short enough for audits.
UNDO_WINDOW = timedelta(seconds=30)


@dataclass
class QueuePage:
    """One page of the review queue and the cursor of the next page (None on the last one)."""

    items: list[ListingImage]
    next_cursor: str | None


@dataclass
class QueueStats:
    """The queue page's counters; a count past `cap` stops there and the page shows it as "10,000+"."""

    open: int
    audit: int
    claimed: int
    oldest_flagged_at: datetime | None
    cap: int = 0

    @property
    def open_capped(self) -> bool:
        """True when the open count stopped at the cap, so the page shows it with a "+"."""
        return bool(self.cap) and self.open > self.cap

    @property
    def audit_capped(self) -> bool:
        """True when the audit count stopped at the cap, so the page shows it with a "+"."""
        return bool(self.cap) and self.audit > self.cap

    @property
    def backlog_seconds(self) -> float | None:
        """How long the oldest flagged item has waited, in seconds; None when the queue is empty."""
        if self.oldest_flagged_at is None:
            return None
        return max(0.0, (clock.now() - self.oldest_flagged_at).total_seconds())

    @property
    def backlog_display(self) -> str:
        """The oldest item's wait in two units at most ("2 h 12 min"), short enough for a counter tile."""
        seconds = self.backlog_seconds
        if seconds is None:
            return "—"
        minutes = int(seconds // 60)
        if minutes < 1:
            return "< 1 min"
        if minutes < 60:
            return f"{minutes} min"
        hours, minutes = divmod(minutes, 60)
        if hours < 48:
            return f"{hours} h {minutes} min"
        days, hours = divmod(hours, 24)
        return f"{days} d {hours} h"


@dataclass
class ItemView:
    """What the item page shows: the image, its per-label probabilities (with a prohibited flag), decisions and
    the near-duplicates a decision here applies to as well."""

    image: ListingImage
    probabilities: list[tuple[str, float, bool]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    group: list[ListingImage] = field(default_factory=list)


def encode_cursor(image: ListingImage) -> str:
    """Return the keyset cursor of the page that starts after `image`: its position in the queue order."""
    probability = UNSCORED if image.prohibited_probability is None else repr(image.prohibited_probability)
    return f"{probability}_{image.created_at.isoformat()}_{image.pk}"


def decode_cursor(cursor: str) -> tuple[float | None, datetime, int] | None:
    """Parse a cursor from the query string; a malformed one means "first page", never an error page."""
    try:
        probability, created, pk = cursor.split("_")
        created_at = parse_datetime(created)
        if created_at is None:
            return None
        return (None if probability == UNSCORED else float(probability)), created_at, int(pk)
    except (ValueError, TypeError):
        return None


def _after(probability: float | None, created_at: datetime, pk: int) -> Q:
    """Rows after this position in the queue order (unscored rows first, then by probability, age and id)."""
    if probability is None:
        same = Q(prohibited_probability__isnull=True)
        return (
            Q(prohibited_probability__isnull=False)
            | (same & Q(created_at__gt=created_at))
            | (same & Q(created_at=created_at, pk__gt=pk))
        )
    return (
        Q(prohibited_probability__lt=probability)
        | Q(prohibited_probability=probability, created_at__gt=created_at)
        | Q(prohibited_probability=probability, created_at=created_at, pk__gt=pk)
    )


def queue_page(cursor: str | None = None, limit: int = PAGE_SIZE) -> QueuePage:
    """One page of queue entries in review order, with their listing in the same query (no N+1).

    An entry is a flagged image that leads its near-duplicate group (or has none); each carries `group`, the
    group's other flagged images, oldest first, read in one more query by the page's own IDs. Marking the leads
    with an `EXISTS` over the members instead looked cheaper but PostgreSQL planned it as a hashed scan of every
    open item (50 ms at 100,000 of them, against under 1 ms for the page itself).
    """
    images = ListingImage.objects.filter(status=ImageStatus.FLAGGED, duplicate_of__isnull=True).select_related(
        "listing", "claimed_by"
    )
    position = decode_cursor(cursor) if cursor else None
    if position is not None:
        images = images.filter(_after(*position))
    rows = list(images.order_by(*QUEUE_ORDER)[: limit + 1])
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    items = rows[:limit]
    members = group_members([item.pk for item in items]) if items else {}
    for item in items:
        item.group = members.get(item.pk, [])
    return QueuePage(items=items, next_cursor=next_cursor)


def group_members(lead_ids) -> dict[int, list[ListingImage]]:
    """The flagged members of each lead's near-duplicate group, oldest first."""
    members: dict[int, list[ListingImage]] = {}
    rows = ListingImage.objects.filter(status=ImageStatus.FLAGGED, duplicate_of_id__in=list(lead_ids))
    for image in rows.select_related("listing").order_by("pk"):
        members.setdefault(image.duplicate_of_id, []).append(image)
    return members


def queue_stats(cap: int | None = None) -> QueueStats:
    """Open, audit and claimed counts and the oldest flag time, each read from an index.

    Counting every open item costs tens of milliseconds at 100,000 of them, so counts stop at `cap` and the page
    shows "10,000+": past that, the exact number changes nothing a moderator does. Claims are few (one per
    moderator) and found through the claimed_by index; the oldest flag is the first entry of `flagged_age_idx`.
    """
    cap = cap or COUNT_CAP
    flagged = ListingImage.objects.filter(status=ImageStatus.FLAGGED).order_by()
    open_count = flagged.values("id")[: cap + 1].count()
    audit_count = flagged.filter(is_audit=True).values("id")[: cap + 1].count()
    claimed = flagged.filter(claimed_by__isnull=False, claim_expires_at__gt=clock.now()).count()
    oldest = (
        flagged.filter(flagged_at__isnull=False).order_by("flagged_at").values_list("flagged_at", flat=True).first()
    )
    return QueueStats(open=open_count, audit=audit_count, claimed=claimed, oldest_flagged_at=oldest, cap=cap)


def current_claim(user) -> ListingImage | None:
    """The flagged item `user` holds a live lease on, if any."""
    return (
        ListingImage.objects.filter(status=ImageStatus.FLAGGED, claimed_by=user, claim_expires_at__gt=clock.now())
        .order_by(*QUEUE_ORDER)
        .first()
    )


def item_view(image_id: int) -> ItemView:
    """Everything the item page shows: image, listing, per-label probabilities of the current model, history."""
    image = ListingImage.objects.select_related("listing", "claimed_by").get(pk=image_id)
    score = None
    if image.model_version:
        score = Score.objects.filter(image=image, model_version=image.model_version).first()
    if score is None:
        score = Score.objects.filter(image=image).order_by("-created_at").first()
    probabilities = []
    if score is not None:
        prohibited = {score.prohibited_label} if score.prohibited_label else set()
        version = ModelVersion.objects.filter(version=score.model_version).only("prohibited_labels").first()
        if version is not None:
            prohibited |= set(version.prohibited_labels)
        probabilities = sorted(
            ((label, float(p), label in prohibited) for label, p in (score.probabilities or {}).items()),
            key=lambda row: -row[1],
        )
    decisions = list(image.decisions.select_related("moderator", "bank_entry__bank").order_by("-created_at"))
    group = group_members([image.pk]).get(image.pk, []) if image.status == ImageStatus.FLAGGED else []
    return ItemView(image=image, probabilities=probabilities, decisions=decisions, group=group)


def listing_page(
    cursor_id: int | None = None, limit: int = PAGE_SIZE, status: str = ""
) -> tuple[list[Listing], int | None]:
    """Newest listings first, keyset-paged by id, with image counts in the same query."""
    listings = Listing.objects.annotate(
        image_count=Count("images"),
        flagged_count=Count("images", filter=Q(images__status=ImageStatus.FLAGGED)),
    ).order_by("-id")
    if status:
        listings = listings.filter(status=status)
    if cursor_id:
        listings = listings.filter(id__lt=cursor_id)
    rows = list(listings[: limit + 1])
    next_cursor = rows[limit - 1].pk if len(rows) > limit else None
    return rows[:limit], next_cursor


def listing_detail(listing_id: int) -> Listing:
    """A listing with its images, every score and every decision prefetched for the staff detail page."""
    return (
        Listing.objects.select_related("submitted_by")
        .prefetch_related(
            Prefetch(
                "images",
                queryset=ListingImage.objects.order_by("id").prefetch_related(
                    Prefetch("scores", queryset=Score.objects.order_by("-created_at")),
                    Prefetch(
                        "decisions", queryset=Decision.objects.select_related("moderator").order_by("-created_at")
                    ),
                    Prefetch("matches", queryset=ImageMatch.objects.select_related("bank", "entry")),
                ),
            )
        )
        .get(pk=listing_id)
    )


def image_file(image_id: int) -> ListingImage:
    """The row behind an image download; only the fields the file view needs."""
    return ListingImage.objects.only("id", "file", "image_format").get(pk=image_id)


def undoable_decision(user, decision_id: int | None) -> Decision | None:
    """The decision `user` may still undo (theirs, live, inside the window), for showing an Undo button."""
    if not decision_id:
        return None
    decision = Decision.objects.filter(pk=decision_id, moderator=user, undone_at__isnull=True).first()
    if decision is None or clock.now() - decision.created_at > UNDO_WINDOW:
        return None
    return decision
