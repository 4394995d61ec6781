"""Each scoring process's copy of the hash banks: an exact index of every live entry, kept current by version.

Matching runs on the worker beside the forward pass, so the banks must be in memory there: a million entries
take about 60 MB and a lookup well under a millisecond (`classifier.perceptual.index`). Before matching a batch,
a process that last looked longer than `VIGIA_BANK_REFRESH_SECONDS` ago reads the banks' version (one indexed
read); if it moved, it loads the banks' settings (a handful of rows) and the entries added or removed past the
version it holds (`models.banks` says why that is exactly what changed), so a confirmation matches the next
upload on every worker about a second after it commits, without reloading a million entries. Nothing here writes.
"""

import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from classifier.perceptual.index import HashIndex
from classifier.perceptual.pdq import PdqHash
from moderation.models import BankEntry, BankState, HashBank

#: Entries read from the database per query when loading.
LOAD_CHUNK = 50_000


@dataclass(frozen=True)
class BankRule:
    """What the matcher needs of a bank: whether it is on, its distance and floor, and its action."""

    bank_id: int
    name: str
    enabled: bool
    action: str
    match_distance: int
    quality_floor: int


@dataclass(frozen=True)
class Hit:
    """One photo matching one entry: which bank, how far (bits), through which of its 16 lookups (`lookup`)."""

    entry_id: int
    bank_id: int
    distance: int
    variant: int


def _rules() -> dict[int, BankRule]:
    return {
        bank.pk: BankRule(bank.pk, bank.name, bank.enabled, bank.action, bank.match_distance, bank.quality_floor)
        for bank in HashBank.objects.all()
    }


class BankIndex:
    """The live entries of every bank, by version; `refresh` brings it up to date, `lookup` matches photos."""

    def __init__(self, refresh_seconds: float | None = None):
        self.refresh_seconds = settings.VIGIA_BANK_REFRESH_SECONDS if refresh_seconds is None else refresh_seconds
        self.version = -1
        self.rules: dict[int, BankRule] = {}
        self._index = HashIndex()
        # Entry metadata, by entry id: kept as sorted arrays, not dicts, so a million entries stay small.
        self._ids = np.empty(0, np.int64)
        self._banks = np.empty(0, np.int64)
        self._quality = np.empty(0, np.int16)
        self._checked_at = float("-inf")

    def __len__(self) -> int:
        return len(self._index)

    @classmethod
    def of_entries(cls, entries) -> "BankIndex":
        """An index of just these entries (a queryset), with every bank's rules: for one pass over live photos."""
        index = cls(refresh_seconds=0)
        index.rules = _rules()
        index._load(entries)
        return index

    def refresh(self, *, force: bool = False) -> bool:
        """Load what changed since the version held, at most every `refresh_seconds`; True when something did."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.refresh_seconds:
            return False
        self._checked_at = now
        version = BankState.objects.filter(pk=1).values_list("version", flat=True).first() or 0
        if version == self.version:
            return False
        self.rules = _rules()
        if version < self.version:
            # The banks went back (a database restored from a backup): start again from what they hold.
            self.__init__(self.refresh_seconds)
            self._checked_at = now
        if self.version < 0:
            self._load(BankEntry.objects.filter(removed_at__isnull=True, version__lte=version))
        else:
            self._load(BankEntry.objects.filter(version__gt=self.version, version__lte=version))
            removed = BankEntry.objects.filter(removed_version__gt=self.version, removed_version__lte=version)
            self._index.remove(removed.values_list("pk", flat=True))
        self.version = version
        return True

    def _load(self, entries) -> None:
        last = 0
        while True:
            rows = list(
                entries.filter(pk__gt=last, removed_at__isnull=True)
                .order_by("pk")
                .values_list("pk", "bank_id", "pdq_hash", "quality")[:LOAD_CHUNK]
            )
            if not rows:
                return
            last = rows[-1][0]
            ids = np.array([row[0] for row in rows], np.int64)
            self._index.add([bytes.fromhex(row[2]) for row in rows], ids)
            self._ids = np.concatenate([self._ids, ids])
            self._banks = np.concatenate([self._banks, np.array([row[1] for row in rows], np.int64)])
            quality = np.array([-1 if row[3] is None else row[3] for row in rows], np.int16)
            self._quality = np.concatenate([self._quality, quality])
            if len(self._ids) > len(rows) and self._ids[-len(rows) - 1] > ids[0]:
                # An entry added with a lower id committed later than a higher one: keep the arrays sorted.
                order = np.argsort(self._ids, kind="stable")
                self._ids, self._banks, self._quality = self._ids[order], self._banks[order], self._quality[order]

    def lookup(self, hashes: dict[int, PdqHash]) -> dict[int, list[Hit]]:
        """Every entry of an enabled bank each photo matches, by photo id, nearest first.

        A photo matches an entry when one of its 8 variants, or of its centre's 8, is within the bank's distance
        and both that hash's quality and the entry's (when known) are above the bank's floor. `Hit.variant` is
        the query's place in `PdqHash.lookups` (0-7 the photo, 8-15 its centre).
        """
        enabled = [rule for rule in self.rules.values() if rule.enabled]
        keys = [key for key, value in hashes.items() if value is not None]
        if not enabled or not keys or not len(self._index):
            return {}
        radius = max(rule.match_distance for rule in enabled)
        owners, variants, positions, qualities = [], [], [], []
        for key in keys:
            for position, (variant, quality) in enumerate(hashes[key].lookups()):
                owners.append(key)
                variants.append(variant)
                positions.append(position)
                qualities.append(quality)
        found = self._index.search(variants, radius)
        rows = np.searchsorted(self._ids, found.ids)
        hits: dict[int, list[Hit]] = {}
        best: dict[tuple[int, int], Hit] = {}
        for query, entry_id, distance, row in zip(found.query, found.ids, found.distances, rows, strict=True):
            rule = self.rules.get(int(self._banks[row]))
            key, query = owners[int(query)], int(query)
            quality = int(self._quality[row])
            if rule is None or not rule.enabled or distance > rule.match_distance:
                continue
            if qualities[query] <= rule.quality_floor or 0 <= quality <= rule.quality_floor:
                continue
            hit = Hit(int(entry_id), rule.bank_id, int(distance), positions[query])
            previous = best.get((key, hit.entry_id))
            if previous is None or hit.distance < previous.distance:
                best[(key, hit.entry_id)] = hit
        for (key, _entry), hit in best.items():
            hits.setdefault(key, []).append(hit)
        return {key: sorted(found, key=lambda hit: (hit.distance, hit.entry_id)) for key, found in hits.items()}


_process_index: BankIndex | None = None


def process_index() -> BankIndex:
    """This process's bank index (made on first use; a forked child makes its own as it finds none)."""
    global _process_index
    if _process_index is None:
        _process_index = BankIndex()
    return _process_index
