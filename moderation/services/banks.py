"""Hash banks' writes: decisions fill the confirmed and cleared banks, admins change banks, remove entries, import.

Every change bumps the banks' version under the `BankState` row lock inside the change's transaction and stamps
what it added or removed with that version (see `models.banks`), so scoring workers load exactly what changed.
Decisions do this too: a confirmation adds its photo's hash to the confirmed bank in the decision's transaction,
an undo or an overturn removes it again, and so a copy uploaded a second later is already matched.

Only human decisions fill banks: a bank match repeating one would otherwise let a chain of near-copies drift
away from the photo a person saw. Changing a bank, removing an entry and importing are audited; adding entries to
a take-down bank queues the retroactive pass (`services.retroaction`) that finds live copies.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F

from classifier.perceptual.pdq import CENTRE_MARGIN, CROP_FRACTIONS, HashFormatError, center_crop_hashes, parse_hex
from moderation import clock, outbox
from moderation.models import (
    AuditAction,
    BankAction,
    BankEntry,
    BankKind,
    BankState,
    Decision,
    DecisionOutcome,
    HashBank,
)
from moderation.models.banks import MAX_MATCH_DISTANCE
from moderation.services import audit

#: The bank each human verdict fills.
BANK_OF_OUTCOME = {DecisionOutcome.CONFIRM: BankKind.CONFIRMED, DecisionOutcome.REJECT: BankKind.CLEARED}
DEFAULT_BANKS = {
    BankKind.CONFIRMED: {"name": "Confirmed", "action": BankAction.TAKE_DOWN},
    BankKind.CLEARED: {"name": "Cleared", "action": BankAction.REVIEW},
}
BANK_FIELDS = ("name", "description", "enabled", "action", "match_distance", "quality_floor", "labels")
IMPORT_CHUNK = 5000


class BankError(ValueError):
    """A bank change that cannot be made as asked (a bad setting, an entry already removed); pages answer 400/409."""


@dataclass
class ImportRejected(Exception):
    """An import with bad lines: every error with its line number; nothing was stored."""

    errors: list[tuple[int, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{len(self.errors)} bad line(s); nothing was imported"


def bump_version() -> int:
    """Take the banks' lock for the rest of the transaction and return the new version (call inside one)."""
    state, _ = BankState.objects.select_for_update().get_or_create(pk=1)
    BankState.objects.filter(pk=1).update(version=F("version") + 1)
    return state.version + 1


def decision_bank(kind: str) -> HashBank:
    """The bank a kind of decision fills, made with its defaults the first time it is needed."""
    bank, _ = HashBank.objects.get_or_create(kind=kind, defaults=DEFAULT_BANKS[kind])
    return bank


def _queue_retroaction(bank: HashBank) -> None:
    if bank.enabled and bank.action == BankAction.TAKE_DOWN:
        outbox.send_once_on_commit(outbox.APPLY_TAKEDOWN_ENTRIES)


def bank_decision(*, decision: Decision) -> BankEntry | None:
    """Add a human decision's photo to the bank its outcome fills (inside the decision's transaction).

    The photo's two centred crops are added too (`classifier.perceptual.pdq.CROP_FRACTIONS`), read from its file
    here (about 10 ms), and its centre hash as the worker stored it (`CENTRE_MARGIN`). Photos without a hash yet
    (decided before the worker hashed them, or never hashed) add nothing; a hash already live in the bank is kept
    as it is (the first decision stays its source). Returns the photo's entry.
    """
    image = decision.image
    if decision.automated or not image.pdq_hash or decision.outcome not in BANK_OF_OUTCOME:
        return None
    bank = decision_bank(BANK_OF_OUTCOME[decision.outcome])
    version = bump_version()
    hashes = [("", image.pdq_hash, image.pdq_quality), *_centre(image), *_crops(image)]
    live = set(
        BankEntry.objects.filter(
            bank=bank, pdq_hash__in=[h for _d, h, _q in hashes], removed_at__isnull=True
        ).values_list("pdq_hash", flat=True)
    )
    entries = [
        BankEntry.objects.create(
            bank=bank,
            pdq_hash=digest,
            quality=quality,
            derived=derived,
            label=decision.label,
            source_decision=decision,
            source_image=image,
            added_by=decision.moderator,
            version=version,
        )
        for digest, (derived, quality) in {h: (d, q) for d, h, q in reversed(hashes)}.items()
        if digest not in live
    ]
    if entries:
        _queue_retroaction(bank)
    return next((entry for entry in entries if not entry.derived), None)


def _centre(image) -> list[tuple[str, str, int]]:
    """The photo's centre hash as (derived, hash, quality); none for a photo hashed before centres were."""
    if not image.pdq_centre:
        return []
    return [(f"centre_{round(CENTRE_MARGIN * 100, 1):g}", image.pdq_centre[:64], image.pdq_centre_quality)]


def _crops(image) -> list[tuple[str, str, int]]:
    """The photo's centred crops as (derived, hash, quality); none when its file cannot be read."""
    try:
        with image.file.open("rb") as handle:
            data = handle.read()
        crops = center_crop_hashes(data)
    except Exception:  # an unreadable file: the photo itself is banked all the same
        return []
    return [
        (f"crop_{round(f * 100, 1):g}", pdq.hex, pdq.quality) for f, pdq in zip(CROP_FRACTIONS, crops, strict=False)
    ]


def unbank_decision(*, decision: Decision, reason: str) -> int:
    """Remove the entries a decision added (it was undone or overturned); returns how many. Audited."""
    entries = list(BankEntry.objects.filter(source_decision=decision, removed_at__isnull=True))
    if not entries:
        return 0
    version = bump_version()
    for entry in entries:
        _remove(entry, version=version, reason=reason, user=None)
    return len(entries)


def _remove(entry: BankEntry, *, version: int, reason: str, user) -> None:
    entry.removed_at, entry.removed_by, entry.removal_reason = clock.now(), user, reason
    entry.removed_version = version
    entry.save(update_fields=["removed_at", "removed_by", "removal_reason", "removed_version"])
    audit.record(
        action=AuditAction.BANK_ENTRY_REMOVED,
        obj=entry,
        actor=user,
        before={"bank": entry.bank_id, "pdq_hash": entry.pdq_hash, "label": entry.label},
        after={"removed_at": entry.removed_at},
        note=reason,
    )


def remove_entry(*, entry_id: int, reason: str, user) -> BankEntry:
    """An admin takes one entry out of its bank, saying why; workers stop matching it within a second."""
    reason = (reason or "").strip()
    if not reason:
        raise BankError("Say why the entry is removed.")
    with transaction.atomic():
        version = bump_version()
        entry = BankEntry.objects.select_for_update().get(pk=entry_id)
        if entry.removed_at is not None:
            raise BankError(f"Entry {entry.pk} was already removed.")
        _remove(entry, version=version, reason=reason, user=user)
        return entry


def clean_labels(labels) -> list[str]:
    """Labels as a sorted list without blanks or repeats (a form gives them comma-separated)."""
    if isinstance(labels, str):
        labels = labels.split(",")
    return sorted({str(label).strip() for label in labels or [] if str(label).strip()})


def _check(values: dict) -> None:
    distance, floor = values.get("match_distance"), values.get("quality_floor")
    if distance is not None and not 0 <= int(distance) <= MAX_MATCH_DISTANCE:
        raise BankError(f"The match distance is between 0 and {MAX_MATCH_DISTANCE} bits.")
    if floor is not None and not 0 <= int(floor) <= 100:
        raise BankError("The quality floor is between 0 and 100.")
    if values.get("action") is not None and values["action"] not in BankAction.values:
        raise BankError(f"Unknown action {values['action']!r}.")
    if "name" in values and not str(values["name"]).strip():
        raise BankError("A bank needs a name.")


def create_bank(
    *, user, name: str, action: str = BankAction.REVIEW, description: str = "", labels=(), **rules
) -> HashBank:
    """A new imported bank (the confirmed and cleared banks exist already); audited."""
    values = {"name": name.strip(), "action": action, "description": description, **rules}
    _check(values)
    with transaction.atomic():
        bump_version()
        if HashBank.objects.filter(name=values["name"]).exists():
            raise BankError(f"A bank named {values['name']!r} exists already.")
        bank = HashBank.objects.create(kind=BankKind.IMPORTED, labels=clean_labels(labels), created_by=user, **values)
        audit.record(action=AuditAction.BANK_CREATED, obj=bank, actor=user, after=audit.snapshot(bank, BANK_FIELDS))
        return bank


def update_bank(*, bank_id: int, user, **changes) -> HashBank:
    """Change a bank's settings (enabled, action, distance, floor, name, description, labels); audited.

    Switching a bank to take-down runs the retroactive pass over what it holds.
    """
    unknown = set(changes) - set(BANK_FIELDS)
    if unknown:
        raise BankError(f"Not a bank setting: {', '.join(sorted(unknown))}.")
    if "labels" in changes:
        changes["labels"] = clean_labels(changes["labels"])
    _check(changes)
    with transaction.atomic():
        bump_version()
        bank = HashBank.objects.select_for_update().get(pk=bank_id)
        before = audit.snapshot(bank, BANK_FIELDS)
        for name, value in changes.items():
            setattr(bank, name, value)
        bank.save()
        old, new = audit.changes(before, audit.snapshot(bank, BANK_FIELDS))
        if new:
            audit.record(action=AuditAction.BANK_CHANGED, obj=bank, actor=user, before=old, after=new)
        if "action" in new or "enabled" in new:
            BankState.objects.filter(pk=1).update(retroactive_version=0)
            _queue_retroaction(bank)
        return bank


def parse_import(text: str, *, labels: list[str], known: set[str]) -> tuple[list[tuple[str, str]], list]:
    """Lines of `<64 hex digits>[,<label>]` as (hash, label) pairs, and the errors by line number.

    Blank lines and lines starting with # are skipped. A line is wrong when its hash is not hex or not 64 digits,
    when the hash is already in the bank or earlier in the file, or when its label is not one of the bank's.
    """
    rows: list[tuple[str, str]] = []
    errors: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        value, _, label = (part.strip() for part in line.replace("\t", ",").partition(","))
        try:
            digest = parse_hex(value).hex()
        except HashFormatError as error:
            errors.append((number, str(error)))
            continue
        if label and label not in labels:
            allowed = ", ".join(labels) if labels else "none: this bank takes hashes without labels"
            errors.append((number, f"unknown label {label!r} (this bank's labels: {allowed})"))
        elif digest in seen:
            errors.append((number, f"the same hash as line {seen[digest]}"))
        elif digest in known:
            errors.append((number, "this hash is in the bank already"))
        else:
            seen[digest] = number
            rows.append((digest, label))
    return rows, errors


def import_hashes(*, bank_id: int, text: str, user) -> int:
    """Add a file of PDQ hashes to a bank: all its lines, or none (`ImportRejected` lists every bad line).

    Returns how many entries were added. Audited as one import.
    """
    limit = settings.VIGIA_BANK_IMPORT_MAX_LINES
    if text.count("\n") + 1 > limit:
        raise ImportRejected([(limit + 1, f"a file may have at most {limit:,} lines")])
    with transaction.atomic():
        version = bump_version()
        bank = HashBank.objects.select_for_update().get(pk=bank_id)
        known = set(BankEntry.objects.filter(bank=bank, removed_at__isnull=True).values_list("pdq_hash", flat=True))
        rows, errors = parse_import(text, labels=list(bank.labels), known=known)
        if errors:
            raise ImportRejected(errors)
        if not rows:
            raise ImportRejected([(0, "the file has no hashes")])
        for start in range(0, len(rows), IMPORT_CHUNK):
            BankEntry.objects.bulk_create(
                BankEntry(bank=bank, pdq_hash=digest, label=label, added_by=user, version=version)
                for digest, label in rows[start : start + IMPORT_CHUNK]
            )
        audit.record(action=AuditAction.BANK_IMPORTED, obj=bank, actor=user, after={"entries": len(rows)})
        _queue_retroaction(bank)
        return len(rows)
