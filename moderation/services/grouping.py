"""Near-duplicate groups in the review queue: copies of one photo waiting for review are one queue entry.

When the worker flags a hashed photo, `join_groups` looks for open (flagged) photos within the confirmed bank's
match distance of any of its 8 variants; if there are, all of them become one group under its oldest photo, the
lead (`duplicate_of` is empty on the lead and points at it on the members). The queue lists leads only, with the
count and thumbnails of their members; a decision on the lead is applied to every member (`services.review`).
Groups merge: a photo close to two groups joins them into one, since "within distance" is not transitive and a
moderator deciding one of them decides the same picture.

A photo leaves its group whenever it stops waiting for review, whatever made it (a decision, a withdrawal, a
re-score that cleared it, a bank match): `refresh_listing_status`, which every such change calls, calls
`repair_listing`, and a group whose lead left gets its oldest remaining member as the lead, so no member is ever
hidden behind a photo that is no longer in the queue. The sweeper repairs whatever slipped through anyway.
"""

from django.conf import settings
from django.db.models import Min

from classifier.perceptual.index import within
from classifier.perceptual.pdq import split_dihedral
from moderation.models import BankKind, HashBank, ImageStatus, ListingImage
from moderation.models.banks import DEFAULT_MATCH_DISTANCE, DEFAULT_QUALITY_FLOOR


def group_rule() -> tuple[int, int]:
    """The distance and quality floor grouping uses: the confirmed bank's, since a group gets one decision."""
    bank = HashBank.objects.filter(kind=BankKind.CONFIRMED).values_list("match_distance", "quality_floor").first()
    return bank or (DEFAULT_MATCH_DISTANCE, DEFAULT_QUALITY_FLOOR)


def join_groups(*, images: list[ListingImage]) -> int:
    """Group the just-scored photos now flagged with their open near-duplicates; call inside the write.

    Returns how many photos changed group. Photos whose quality is at or under the floor never group.
    """
    if not settings.VIGIA_QUEUE_GROUPING:
        return 0
    distance, floor = group_rule()
    new = [
        image
        for image in images
        if image.status == ImageStatus.FLAGGED and image.pdq_dihedral and (image.pdq_quality or 0) > floor
    ]
    if not new:
        return 0
    open_rows = list(
        ListingImage.objects.filter(status=ImageStatus.FLAGGED, pdq_quality__gt=floor)
        .exclude(pdq_hash="")
        .values_list("pk", "pdq_hash", "duplicate_of_id")
    )
    lead_of = {pk: lead or pk for pk, _hash, lead in open_rows}
    codes = [bytes.fromhex(digest) for _pk, digest, _lead in open_rows]
    variants = [variant for image in new for variant in split_dihedral(image.pdq_dihedral)]
    found = within(variants, codes, [pk for pk, _h, _l in open_rows], distance)
    per_photo = len(variants) // len(new)
    changed = 0
    for position, image in enumerate(new):
        hits = found.ids[found.query // per_photo == position].tolist()
        leads = {lead_of.get(pk, pk) for pk in hits if pk != image.pk} | {lead_of.get(image.pk, image.pk)}
        if len(leads) > 1:
            changed += _merge(leads)
            for pk, lead in lead_of.items():
                if lead in leads:
                    lead_of[pk] = min(leads)
    return changed


def _merge(leads: set[int]) -> int:
    """Make the groups under `leads` one group under the oldest of them."""
    target = min(leads)
    moved = ListingImage.objects.filter(status=ImageStatus.FLAGGED, duplicate_of_id__in=leads - {target}).update(
        duplicate_of_id=target
    )
    moved += ListingImage.objects.filter(pk__in=leads - {target}).update(duplicate_of_id=target)
    ListingImage.objects.filter(pk=target).update(duplicate_of_id=None)
    return moved


def repair_listing(listing_id: int) -> None:
    """Take this listing's photos that stopped waiting for review out of their groups (inside its transaction)."""
    ListingImage.objects.filter(listing_id=listing_id, duplicate_of__isnull=False).exclude(
        status=ImageStatus.FLAGGED
    ).update(duplicate_of=None)
    orphaned = (
        ListingImage.objects.filter(status=ImageStatus.FLAGGED, duplicate_of__listing_id=listing_id)
        .exclude(duplicate_of__status=ImageStatus.FLAGGED)
        .order_by()
        .values_list("duplicate_of_id", flat=True)
        .distinct()
    )
    for lead in list(orphaned):
        _promote(lead)


def _promote(old_lead: int) -> None:
    """The oldest flagged member of a group whose lead left becomes the lead of the rest."""
    members = ListingImage.objects.filter(status=ImageStatus.FLAGGED, duplicate_of_id=old_lead)
    new_lead = members.aggregate(first=Min("pk"))["first"]
    if new_lead is None:
        return
    members.exclude(pk=new_lead).update(duplicate_of_id=new_lead)
    ListingImage.objects.filter(pk=new_lead).update(duplicate_of=None)


def repair_all() -> int:
    """The sweeper's safety net: regroup every group whose lead no longer waits for review. How many."""
    orphaned = list(
        ListingImage.objects.filter(status=ImageStatus.FLAGGED, duplicate_of__isnull=False)
        .exclude(duplicate_of__status=ImageStatus.FLAGGED)
        .order_by()
        .values_list("duplicate_of_id", flat=True)
        .distinct()
    )
    for lead in orphaned:
        _promote(lead)
    return len(orphaned)
