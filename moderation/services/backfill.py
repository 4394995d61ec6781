"""Hash the photos stored before hashing existed, or hashed before centre hashes were, and bank the human
verdicts on them.

Scoring workers hash every photo they score, so an install that upgrades keeps photos without a hash: they never
match a bank, never group in the queue, and the decisions already taken on them banked nothing. Photos hashed by
an earlier release have no centre hash (a captioned copy of them is missed) and rotated and mirrored variants
derived the old way (`classifier.perceptual.pdqmath` says why those missed). This pass brings them level. It
reads and hashes each file with no transaction open (about 1-5 ms a photo), writes every hash field only where
the row still has no centre hash (a worker may have hashed it meanwhile), then banks each live human decision on
a photo it hashed exactly as a new decision would (`banks.bank_decision`, which adds what the bank lacks and
queues the retroactive pass for take-down banks); a decision with an entry someone removed is left as it is.
Running it again does nothing more: it is safe to interrupt and repeat.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from classifier.perceptual.pdq import hash_image
from moderation.models import BankEntry, Decision, ListingImage
from moderation.services import banks
from moderation.services.matching import hash_values


@dataclass
class BackfillResult:
    """What one pass did: photos hashed, photos whose file could not be hashed, decisions banked."""

    hashed: int = 0
    unreadable: int = 0
    banked: int = 0


def missing_count() -> int:
    """Photos with a stored file and no hash, or one made before centre hashes were."""
    return ListingImage.objects.filter(pdq_centre="").exclude(file="").count()


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
            ListingImage.objects.filter(pdq_centre="", pk__gt=after).exclude(file="").order_by("pk")[:batch_size]
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
    ListingImage.objects.filter(pk=image.pk, pdq_centre="").update(**hash_values(pdq))
    return True


def _bank_live_decision(image: ListingImage) -> int:
    with transaction.atomic():
        decision = (
            Decision.objects.select_related("image")
            .filter(image_id=image.pk, undone_at__isnull=True, automated=False)
            .first()
        )
        if decision is None:
            return 0
        entries = BankEntry.objects.filter(source_decision=decision)
        # An entry someone removed stays removed; a decision banked with its centre is banked already.
        if entries.filter(Q(removed_at__isnull=False) | Q(derived__startswith="centre")).exists():
            return 0
        before = entries.count()
        banks.bank_decision(decision=decision)
        return int(entries.count() > before)
