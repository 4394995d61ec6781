"""Reads for the hash banks: the banks with their counts, a bank's entries, an export, a photo's matches."""

from collections.abc import Iterator

from django.db.models import Count, Q

from moderation import clock
from moderation.models import BankEntry, HashBank, ImageMatch

ENTRY_PAGE = 100


def bank_list():
    """Every bank with its live and removed entries counted, in creation order."""
    return HashBank.objects.annotate(
        live=Count("entries", filter=Q(entries__removed_at__isnull=True)),
        removed=Count("entries", filter=Q(entries__removed_at__isnull=False)),
        matched=Count("matches", distinct=True),
    ).order_by("id")


def bank_entries(bank_id: int, *, before_id: int | None = None, removed: bool = False, limit: int = ENTRY_PAGE):
    """One page of a bank's entries, newest first (keyset by id), with their source decision and photo."""
    rows = BankEntry.objects.filter(bank_id=bank_id, removed_at__isnull=not removed)
    if before_id:
        rows = rows.filter(pk__lt=before_id)
    rows = list(
        rows.select_related("source_decision__moderator", "source_image", "added_by", "removed_by").order_by("-pk")[
            : limit + 1
        ]
    )
    return rows[:limit], (rows[limit - 1].pk if len(rows) > limit else None)


def export_lines(bank_id: int) -> Iterator[str]:
    """The bank's live entries as an import file (`<hash>,<label>` lines) with a header, streamed in id order."""
    bank = HashBank.objects.get(pk=bank_id)
    yield f"# Vigia hash bank {bank.name!r} ({bank.get_kind_display()}): PDQ hashes, {clock.now():%Y-%m-%d %H:%M}\n"
    yield "# hash,label\n"
    rows = BankEntry.objects.filter(bank_id=bank_id, removed_at__isnull=True).order_by("pk")
    for digest, label in rows.values_list("pdq_hash", "label").iterator(chunk_size=5000):
        yield f"{digest},{label}\n" if label else f"{digest}\n"


def image_matches(image_id: int) -> list[ImageMatch]:
    """A photo's bank matches, nearest first, with the entry's source photo for a side-by-side view."""
    return list(
        ImageMatch.objects.filter(image_id=image_id)
        .select_related("bank", "entry__source_image", "entry__source_decision")
        .order_by("distance", "id")
    )
