"""What a bank match does to a photo: take it down (an automated decision), send it to review, or clear it.

The scoring worker hashes each photo beside the forward pass, with no transaction open (`hash_payloads`, about
5 ms a photo), looks the hashes up in its process's bank index, and in its short write transaction, after the
model's score has routed the photo, `apply_matches` records every match and lets the strongest action decide:

- take down: an automated decision (no moderator; `automated`, citing the entry, whose source decision is the
  human verdict it repeats), the photo confirmed and its listing taken down. It trains nothing and counts for no
  retrain: the decision it repeats already did;
- review: the photo waits in the queue even if the model cleared it, and the item page shows the match;
- clear: the photo is cleared without review even if the model flagged it; but not when the bank matched only
  through the photo's centre (`Hit.variant` 8 and over): the photo's borders are then unlike the cleared photo's,
  and the borders are where a seller would add a prohibited item to a cleared photo, so such a match sends the
  photo to review instead.

Each match is an `image.matched` event (bank, entry, distance, action taken) for the marketplace.
"""

import logging

from classifier.perceptual.pdq import DIHEDRAL, PdqHash, hash_image, split_dihedral
from moderation import clock
from moderation.models import (
    ACTION_STRENGTH,
    BankAction,
    BankEntry,
    Decision,
    EventType,
    ImageMatch,
    ImageStatus,
    ListingImage,
    PolicyCategory,
)
from moderation.services import events
from moderation.services.automated import confirm_automatically
from moderation.services.bank_index import Hit

logger = logging.getLogger(__name__)

#: `Hit.variant` of the first of the photo's centre lookups (`PdqHash.lookups`: the photo's dihedral variants,
#: then the centre's).
CENTRE_LOOKUPS = len(DIHEDRAL)

HASH_FIELDS = ["pdq_hash", "pdq_quality", "pdq_dihedral", "pdq_centre", "pdq_centre_quality"]
ROUTE_FIELDS = ["status", "flagged_at", "cleared_at", "confirmed_at", "is_audit", "audit_probability"]
CLAIM_FIELDS = ["claimed_by", "claim_expires_at"]


def hash_payloads(payloads: dict[int, bytes]) -> dict[int, PdqHash]:
    """PDQ hashes of encoded photos by id; a photo that cannot be hashed is left out (the model says why)."""
    hashes = {}
    for key, data in payloads.items():
        try:
            hashes[key] = hash_image(data)
        except Exception as error:  # an undecodable photo: the forward pass records the error on it
            logger.info("image %s could not be hashed: %s", key, error)
    return hashes


def hash_values(pdq: PdqHash) -> dict:
    """The image's `HASH_FIELDS` for a hash."""
    return dict(
        zip(HASH_FIELDS, (pdq.hex, pdq.quality, pdq.dihedral_hex, pdq.centre_hex, pdq.centre_quality), strict=True)
    )


def store_hash(image: ListingImage, pdq: PdqHash) -> None:
    """Put the hash on the image (the caller saves `HASH_FIELDS`)."""
    for field, value in hash_values(pdq).items():
        setattr(image, field, value)


def stored_hash(dihedral: str, quality: int | None, centre: str = "", centre_quality: int | None = None) -> PdqHash:
    """The hash an image row stores (`pdq_dihedral`, `pdq_quality`, `pdq_centre`, `pdq_centre_quality`); a photo
    hashed before centre hashes existed has none, and is looked up by its own variants alone."""
    variants = tuple(split_dihedral(dihedral))
    return PdqHash(
        hash=variants[0],
        quality=quality or 0,
        dihedral=variants,
        centre=tuple(split_dihedral(centre)),
        centre_quality=centre_quality or 0,
    )


#: The `values_list` fields `stored_hash` takes, after the primary key.
STORED_HASH_FIELDS = ["pdq_dihedral", "pdq_quality", "pdq_centre", "pdq_centre_quality"]


def match_data(match: ImageMatch) -> dict:
    """The `image.matched` payload: which bank and entry, how far, what was done."""
    return {
        "image_id": match.image_id,
        "bank": {"id": match.bank_id, "name": match.bank.name},
        "entry_id": match.entry_id,
        "distance": match.distance,
        "action": match.action if match.applied else "none",
        "source_decision_id": match.entry.source_decision_id,
    }


def apply_matches(*, image: ListingImage, hits: list[Hit]) -> ImageMatch | None:
    """Record the photo's matches and do what the strongest one says; call inside the write transaction.

    Returns the match that decided (None without matches). A photo a moderator rejected keeps that verdict: its
    matches are recorded and announced, not applied. A confirmed or withdrawn photo is left alone, and so are
    entries removed since the index was read.
    """
    if not hits or image.status in (ImageStatus.CONFIRMED, ImageStatus.WITHDRAWN):
        return None
    act = image.status != ImageStatus.REJECTED
    entries = BankEntry.objects.select_related("bank", "source_decision").in_bulk([hit.entry_id for hit in hits])
    live = [hit for hit in hits if hit.entry_id in entries and entries[hit.entry_id].removed_at is None]
    live = [hit for hit in live if entries[hit.entry_id].bank.enabled]
    if not live:
        return None
    through_photo = {entries[hit.entry_id].bank_id for hit in live if hit.variant < CENTRE_LOOKUPS}
    action = {hit.entry_id: action_of(entries[hit.entry_id].bank, through_photo) for hit in live}
    strongest = max(live, key=lambda hit: (ACTION_STRENGTH[action[hit.entry_id]], -hit.distance))
    deciding = None
    for hit in live:
        entry = entries[hit.entry_id]
        match, created = ImageMatch.objects.get_or_create(
            image=image,
            entry=entry,
            defaults={
                "bank": entry.bank,
                "distance": hit.distance,
                "variant": hit.variant,
                "action": action[hit.entry_id],
                "applied": act and hit is strongest,
            },
        )
        if hit is strongest:
            deciding = match
        if created:
            events.emit(type=EventType.IMAGE_MATCHED, listing=image.listing, data=match_data(match))
    if not act:
        return None
    _act(image, deciding)
    return deciding


def action_of(bank, through_photo: set[int]) -> str:
    """What a bank's match does to a photo: the bank's action, except that a clearing bank the photo matched only
    through its centre (its id not in `through_photo`) sends it to review (the module docstring says why)."""
    if bank.action == BankAction.CLEAR and bank.pk not in through_photo:
        return BankAction.REVIEW
    return bank.action


def _act(image: ListingImage, match: ImageMatch) -> None:
    now = clock.now()
    if match.action == BankAction.TAKE_DOWN:
        take_down(image=image, match=match)
    elif match.action == BankAction.REVIEW and image.status != ImageStatus.FLAGGED:
        image.status, image.flagged_at, image.is_audit, image.audit_probability = ImageStatus.FLAGGED, now, False, 1.0
        image.save(update_fields=ROUTE_FIELDS)
    elif match.action == BankAction.CLEAR and image.status != ImageStatus.CLEARED:
        image.status, image.cleared_at, image.is_audit = ImageStatus.CLEARED, now, False
        image.claimed_by, image.claim_expires_at = None, None
        image.save(update_fields=ROUTE_FIELDS + CLAIM_FIELDS)


def take_down(*, image: ListingImage, match: ImageMatch) -> Decision:
    """The automated decision of a take-down match: the photo confirmed, citing the entry and its source decision.

    Recorded like a moderator's (event, audit entry, the listing's status is refreshed by the caller) but by the
    system, so the DSA export says the decision was automated.
    """
    entry = match.entry
    source = entry.source_decision
    note = f"Matched bank {entry.bank.name!r} entry {entry.pk} at distance {match.distance}"
    note += f", repeating decision {source.pk}." if source else f" (imported, label {entry.label!r})."
    decision = confirm_automatically(
        image=image,
        note=note,
        audit_after={"bank_entry": entry.pk},
        bank_entry=entry,
        policy_category=source.policy_category if source else PolicyCategory.PROHIBITED_ITEM,
        label=source.label if source else "",
        prohibited_probability=image.prohibited_probability,
    )
    return decision
