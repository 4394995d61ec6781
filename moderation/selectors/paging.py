"""Keyset paging of the desk's oldest-first worklists (open appeals, failed images).

A page starts after the row the previous page ended on, found by its id: a moderator acting on rows between two
page loads moves the list under them, and an offset would then skip or repeat rows; a keyset never does. A row
that left the list meanwhile still anchors the next page by its stamp, or the list starts again from the top.
"""

from django.db.models import Q, QuerySet


def oldest_first(rows: QuerySet, *, stamp: str, after: int | None, limit: int) -> tuple[list, int | None]:
    """`limit` rows ordered by `stamp` then id, after the row with id `after`; and the id to continue after."""
    anchor = rows.model.objects.filter(pk=after).values_list(stamp, flat=True).first() if after else None
    if anchor is not None:
        rows = rows.filter(Q(**{f"{stamp}__gt": anchor}) | Q(**{stamp: anchor, "id__gt": after}))
    page = list(rows.order_by(stamp, "id")[: limit + 1])
    return page[:limit], (page[limit - 1].pk if len(page) > limit else None)
