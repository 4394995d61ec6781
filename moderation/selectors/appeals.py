"""Reads for appeals and the moderator's record: the open appeals oldest first, one appeal, a listing's appeals, and
per moderator how many decisions were made, undone and overturned on appeal."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Count, Prefetch, Q

from moderation.models import Appeal, AppealStatus, Decision, DecisionOutcome
from moderation.permissions import ADMINS, MODERATORS
from moderation.selectors.paging import oldest_first

PAGE_SIZE = 50


def _with_decisions(appeals):
    """Appeals with their listing, reviewer, contested decisions and the decisions an overturn made, prefetched."""
    decisions = Decision.objects.select_related("moderator", "image").order_by("image_id", "id")
    return appeals.select_related("listing", "client", "decided_by").prefetch_related(
        Prefetch("contested", queryset=decisions), Prefetch("decisions_made", queryset=decisions)
    )


@dataclass
class AppealPage:
    """One page of open appeals, oldest first; `next_cursor` is the id to continue after (None on the last page)."""

    appeals: list[Appeal]
    next_cursor: int | None
    open_count: int


def open_appeals_page(after: int | None = None, limit: int | None = None) -> AppealPage:
    """Open appeals oldest first (the partial index `open_appeals_idx`), keyset-paged after an appeal's id."""
    rows = Appeal.objects.filter(status=AppealStatus.OPEN)
    open_count = rows.count()
    page, next_cursor = oldest_first(_with_decisions(rows), stamp="created_at", after=after, limit=limit or PAGE_SIZE)
    return AppealPage(appeals=page, next_cursor=next_cursor, open_count=open_count)


def appeal_detail(appeal_id: int) -> Appeal:
    """One appeal with everything its page shows (`Appeal.DoesNotExist` for an unknown id)."""
    return _with_decisions(Appeal.objects.all()).get(pk=appeal_id)


def listing_appeals(listing_id: int) -> list[Appeal]:
    """A listing's appeals, oldest first, with their reviewer."""
    return list(Appeal.objects.filter(listing_id=listing_id).select_related("decided_by").order_by("created_at", "id"))


@dataclass
class ModeratorRecord:
    """One moderator's queue decisions and what became of them; appeals they decided are counted apart.

    `undone` counts the moderator's own undos; `overturned` the decisions an appeal overturned (corrections). The
    correction rate is overturned / confirmations that stood (not undone by the moderator): only a confirmation
    can be appealed, so that is what could have been corrected.
    """

    user: object
    decisions: int = 0
    confirmations: int = 0
    rejections: int = 0
    undone: int = 0
    overturned: int = 0
    confirmations_stood: int = 0
    appeals_decided: int = 0

    @property
    def correction_rate(self) -> float | None:
        """Overturned on appeal / confirmations that stood; None before any confirmation stood."""
        if not self.confirmations_stood:
            return None
        return self.overturned / self.confirmations_stood

    @property
    def correction_rate_display(self) -> str:
        """The correction rate as a percentage with one decimal ("2.5%"), or a dash before any confirmation stood."""
        rate = self.correction_rate
        return "—" if rate is None else f"{rate:.1%}"


def moderator_records() -> list[ModeratorRecord]:
    """A record per moderator or admin (and anyone else who decided), most decisions first."""
    confirm = Q(outcome=DecisionOutcome.CONFIRM)
    overturned = Q(overturned_at__isnull=False)
    counts = (
        Decision.objects.filter(appeal__isnull=True)
        .values("moderator")
        .annotate(
            decisions=Count("id"),
            confirmations=Count("id", filter=confirm),
            rejections=Count("id", filter=Q(outcome=DecisionOutcome.REJECT)),
            undone=Count("id", filter=Q(undone_at__isnull=False) & ~overturned),
            overturned=Count("id", filter=overturned),
            confirmations_stood=Count("id", filter=confirm & (Q(undone_at__isnull=True) | overturned)),
        )
        .order_by()
    )
    by_user = {row.pop("moderator"): row for row in counts}
    appeals = Appeal.objects.filter(decided_by__isnull=False).values("decided_by").annotate(n=Count("id")).order_by()
    decided = {row["decided_by"]: row["n"] for row in appeals}
    users = get_user_model().objects.filter(
        Q(pk__in=set(by_user) | set(decided))
        | Q(groups__name__in=[MODERATORS, ADMINS])
        | Q(is_staff=True)
        | Q(is_superuser=True)
    )
    records = [
        ModeratorRecord(user=user, **by_user.get(user.pk, {}), appeals_decided=decided.get(user.pk, 0))
        for user in users.distinct().order_by("username")
    ]
    return sorted(records, key=lambda record: -record.decisions)
