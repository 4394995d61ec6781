"""Hash the photos stored before hashing existed, and bank the human verdicts on them.

Scoring workers hash every photo they score, so an install that upgrades keeps photos without a hash: they never
match a bank, never group in the queue, and the decisions already taken on them banked nothing. This pass brings
them level. It reads and hashes each file with no transaction open (about 5-10 ms a photo), writes the hash only
where the row still has none (a worker may have hashed it meanwhile), then banks each live human decision on a
photo it hashed exactly as a new decision would (`banks.bank_decision`, which queues the retroactive pass for
take-down banks). Running it again does nothing more: it is safe to interrupt and repeat.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

from classifier.perceptual.pdq import hash_image
from moderation.models import BankEntry, Decision, ListingImage
from moderation.services import banks
from moderation.services.matching import HASH_FIELDS


@dataclass
class BackfillResult:
    """What one pass did: photos hashed, photos whose file could not be hashed, decisions banked."""

    hashed: int = 0
    unreadable: int = 0
    banked: int = 0


def missing_count() -> int:
    """Photos with a stored file and no hash."""
    return ListingImage.objects.filter(pdq_hash="").exclude(file="").count()


def hash_missing_images(
    *, batch_size: int = 200, bank_decisions: bool = True, progress: Callable[[BackfillResult], None] | None = None
) -> BackfillResult:
    """Hash every photo that has none, oldest first, in batches; bank the live human decisions on them.

    A file that cannot be read or decoded is counted as unreadable and left without a hash (as the worker leaves
    it); the pass goes on with the next photo. `progress` is called after every batch with the running totals.
    """
    result, after = BackfillResult(), 0
    while True:
        batch = list(
            ListingImage.objects.filter(pdq_hash="", pk__gt=after).exclude(file="").order_by("pk")[:batch_size]
        )
        if not batch:
            return result
        after = batch[-1].pk
        for image in batch:
            if _hash_one(image):
                result.hashed += 1
                if bank_decisions:
                    result.banked += _bank_live_decision(image)
            else:
                result.unreadable += 1
        if progress:
            progress(result)


def _hash_one(image: ListingImage) -> bool:
    try:
        with image.file.open("rb") as handle:
            pdq = hash_image(handle.read())
    except Exception:  # a missing or undecodable file: reported in the totals, the row is left as it is
        return False
    values = dict(zip(HASH_FIELDS, (pdq.hex, pdq.quality, pdq.dihedral_hex), strict=True))
    ListingImage.objects.filter(pk=image.pk, pdq_hash="").update(**values)
    return True


def _bank_live_decision(image: ListingImage) -> int:
    with transaction.atomic():
        decision = (
            Decision.objects.select_related("image")
            .filter(image_id=image.pk, undone_at__isnull=True, automated=False)
            .first()
        )
        if decision is None or BankEntry.objects.filter(source_decision=decision).exists():
            return 0
        return int(banks.bank_decision(decision=decision) is not None)
