"""Bank matches outside the scoring pass: photos whose score was reused, and live photos a new entry now matches.

Two ways a photo can need matching without a forward pass. A photo whose exact bytes were scored before reuses
that score at intake (`services.ingest`) and its hash is copied from the earlier photo; `match_stored` then looks
it up on a scoring worker, where the banks are. And when an entry is added to a take-down bank (a confirmation,
an import, a bank switched to take-down), copies already live must come down too: `apply_takedown_entries` takes
the take-down entries added since its last pass, indexes them, and walks the live photos in chunks (about 60 MB
of hashes at a million photos), taking down the model-cleared and flagged ones that match. A photo a moderator
rejected keeps that verdict: the match is recorded and shown on its listing, and overriding a person is a
person's call. Passes are idempotent (a photo already confirmed is left alone), so two at once do no harm.
"""

from django.db import transaction

from moderation import outbox
from moderation.models import BankAction, BankEntry, BankState, ImageStatus, ListingImage
from moderation.services.bank_index import BankIndex, process_index
from moderation.services.grouping import join_groups
from moderation.services.listings import refresh_listing_status
from moderation.services.matching import STORED_HASH_FIELDS, apply_matches, stored_hash

SCAN_CHUNK = 2000
LIVE = (ImageStatus.CLEARED, ImageStatus.FLAGGED, ImageStatus.REJECTED)


def _apply(hits: dict) -> list[int]:
    """Apply each photo's hits in its own short transaction; returns the photos acted on."""
    applied = []
    for image_id, found in hits.items():
        with transaction.atomic():
            image = ListingImage.objects.select_for_update().select_related("listing").get(pk=image_id)
            if apply_matches(image=image, hits=found) is not None:
                join_groups(images=[image])
                refresh_listing_status(image.listing_id)
                applied.append(image.pk)
    return applied


def match_stored(*, image_ids: list[int]) -> list[int]:
    """Match photos that already carry a hash (a reused score) against this process's banks; returns those acted on."""
    rows = ListingImage.objects.filter(pk__in=image_ids, status__in=LIVE).exclude(pdq_dihedral="")
    hashes = {pk: stored_hash(*stored) for pk, *stored in rows.values_list("pk", *STORED_HASH_FIELDS)}
    index = process_index()
    index.refresh()
    return _apply(index.lookup(hashes))


def apply_takedown_entries() -> int:
    """Find the live copies of the take-down entries added since the last pass and act on them; how many photos."""
    with transaction.atomic():
        state, _ = BankState.objects.select_for_update().get_or_create(pk=1)
        since, until = state.retroactive_version, state.version
    entries = BankEntry.objects.filter(
        removed_at__isnull=True,
        bank__enabled=True,
        bank__action=BankAction.TAKE_DOWN,
        version__gt=since,
        version__lte=until,
    )
    index = BankIndex.of_entries(entries)
    acted = 0
    if len(index):
        live = (
            ListingImage.objects.filter(status__in=LIVE, listing__withdrawn_at__isnull=True)
            .exclude(pdq_dihedral="")
            .order_by("pk")
        )
        last = 0
        while True:
            rows = list(live.filter(pk__gt=last).values_list("pk", *STORED_HASH_FIELDS)[:SCAN_CHUNK])
            if not rows:
                break
            last = rows[-1][0]
            hits = index.lookup({pk: stored_hash(*stored) for pk, *stored in rows})
            acted += len(_apply(hits))
    # Unless an admin's change asked for a pass from the start meanwhile, entries up to `until` are done.
    BankState.objects.filter(pk=1, retroactive_version=since).update(retroactive_version=until)
    return acted


def queue_if_behind() -> bool:
    """The sweeper's safety net: queue the retroactive pass if bank changes are past it (a lost message)."""
    state = BankState.objects.filter(pk=1).values("version", "retroactive_version").first()
    if not state or state["retroactive_version"] >= state["version"]:
        return False
    with transaction.atomic():
        outbox.send_once_on_commit(outbox.APPLY_TAKEDOWN_ENTRIES)
    return True
