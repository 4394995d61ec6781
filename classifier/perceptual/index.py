"""Exact "every hash within distance d" over many 256-bit hashes: a multi-index hash table in numpy.

A bank may hold a million hashes and every upload asks for all of them within distance 31 of each of its 8
dihedral variants and its centre's 8. Comparing with all of them is 32 MB of memory per question; FAISS's flat
binary index does that at about 900 questions a second on one core here, and its multi-hash index, which is exact
with the parameters below, at about 600 (its buckets are C++ hash maps, and it deduplicates through a set). This
index follows the same idea (Norouzi et al.'s multi-index hashing) with flat arrays:

- the 256 bits are cut into 16 chunks of 16 bits. Two hashes within distance r differ in at most r // 16 bits of
  at least one chunk (pigeonhole), so probing each chunk's table with every value within r // 16 bits of the
  question's chunk finds every answer: the search is exact, not approximate;
- each table is a counting sort of the entries by that chunk (an offsets array of 65,537 positions and the
  entries' row numbers in chunk order), so a probe is two array reads and its bucket a contiguous slice;
- the candidates are checked on two of the four 64-bit words first (a random candidate is ~64 bits away on
  them, a real answer at most r), and only the few survivors on all four.

Memory is 52 bytes an entry plus 8 MB (1,000,000 entries: 60 MB). Entries added after the index was built wait in
a small brute-force delta that is merged into the tables once it reaches `MERGE_AT`; removed entries are masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from classifier.perceptual.pdq import HASH_BYTES

CHUNKS = 16
CHUNK_VALUES = 1 << 16
#: Distances up to this are supported (at most 3 bits flipped per chunk probe).
MAX_RADIUS = 63
#: Entries waiting in the delta before it is merged into the tables (a rebuild: ~0.6 s at a million entries).
MERGE_AT = 4096


def as_codes(hashes) -> np.ndarray:
    """Hashes (a list of 32-byte strings, or an (n, 32) uint8 array) as a contiguous (n, 32) uint8 array."""
    if isinstance(hashes, np.ndarray):
        codes = hashes.astype(np.uint8, copy=False).reshape(-1, HASH_BYTES)
    else:
        codes = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, HASH_BYTES)
    return np.ascontiguousarray(codes)


@dataclass
class Found:
    """Answers of a search: for each, the question's row, the entry's id and their distance; sorted, no repeats."""

    query: np.ndarray
    ids: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> Found:
        """No answers."""
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32))


def _probe_masks(flips: int) -> np.ndarray:
    """Every 16-bit mask with at most `flips` bits set: what a question's chunk is XORed with to probe."""
    masks = [0]
    for count in range(1, flips + 1):
        masks += [sum(1 << bit for bit in bits) for bits in combinations(range(16), count)]
    return np.array(masks, dtype=np.int64)


def brute_force(queries: np.ndarray, codes: np.ndarray, ids: np.ndarray, radius: int) -> Found:
    """Every (question, entry) pair within `radius`, by comparing each question with every entry (small sets)."""
    if not len(queries) or not len(codes):
        return Found.empty()
    q64, c64 = queries.view(np.uint64), codes.view(np.uint64)
    found = [Found.empty()]
    # Blocks of questions keep the distance matrix small whatever the sizes.
    step = max(1, 2_000_000 // len(codes))
    for start in range(0, len(queries), step):
        block = q64[start : start + step]
        dist = np.bitwise_count(block[:, None, :] ^ c64[None, :, :]).sum(axis=2, dtype=np.int32)
        rows, cols = np.nonzero(dist <= radius)
        found.append(Found(rows.astype(np.int64) + start, ids[cols].astype(np.int64), dist[rows, cols]))
    return _concat(found)


def _concat(parts: list[Found]) -> Found:
    query = np.concatenate([part.query for part in parts])
    ids = np.concatenate([part.ids for part in parts])
    distances = np.concatenate([part.distances for part in parts])
    order = np.lexsort((ids, query))
    return Found(query[order], ids[order], distances[order])


class HashIndex:
    """Exact range search over 256-bit hashes, each with an integer id; add and remove as entries come and go."""

    def __init__(self, codes=None, ids=None):
        self._codes = np.empty((0, HASH_BYTES), np.uint8)
        self._ids = np.empty(0, np.int64)
        self._alive = np.empty(0, bool)
        self._delta_codes: list[np.ndarray] = []
        self._delta_ids: list[np.ndarray] = []
        self._build()
        if codes is not None:
            self.add(codes, ids)
            self.merge()

    def __len__(self) -> int:
        return int(self._alive.sum()) + sum(len(ids) for ids in self._delta_ids)

    def _build(self) -> None:
        n = len(self._codes)
        chunks = self._codes.view(np.uint16).astype(np.int64)  # (n, 16), chunk k = bytes 2k and 2k+1
        self._rows = np.empty(CHUNKS * n, np.int32)
        self._offsets = np.empty((CHUNKS, CHUNK_VALUES + 1), np.int64)
        for k in range(CHUNKS):
            key = chunks[:, k]
            self._rows[k * n : (k + 1) * n] = np.argsort(key, kind="stable")
            self._offsets[k, 0] = 0
            np.cumsum(np.bincount(key, minlength=CHUNK_VALUES), out=self._offsets[k, 1:])
            self._offsets[k] += k * n
        self._flat_offsets = self._offsets.ravel()
        self._words = [np.ascontiguousarray(self._codes.view(np.uint64)[:, i]) for i in range(4)]

    def add(self, codes, ids) -> None:
        """Add entries (merged into the tables once the delta is large; searchable at once either way)."""
        codes = as_codes(codes)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(codes) != len(ids):
            raise ValueError("one id per hash")
        if len(ids):
            self._delta_codes.append(codes)
            self._delta_ids.append(ids)
        if sum(len(part) for part in self._delta_ids) >= MERGE_AT:
            self.merge()

    def merge(self) -> None:
        """Fold the delta into the tables and drop removed entries (a rebuild)."""
        if not self._delta_ids and self._alive.all():
            return
        keep = self._alive
        self._codes = np.concatenate([self._codes[keep], *self._delta_codes])
        self._ids = np.concatenate([self._ids[keep], *self._delta_ids])
        self._alive = np.ones(len(self._ids), bool)
        self._delta_codes, self._delta_ids = [], []
        self._build()

    def remove(self, ids) -> None:
        """Forget entries by id (masked now, gone at the next merge)."""
        ids = np.asarray(list(ids), dtype=np.int64)
        if not len(ids):
            return
        self._alive &= ~np.isin(self._ids, ids)
        for i, part in enumerate(self._delta_ids):
            keep = ~np.isin(part, ids)
            self._delta_ids[i], self._delta_codes[i] = part[keep], self._delta_codes[i][keep]

    def search(self, queries, radius: int) -> Found:
        """Every entry within `radius` (inclusive) of each question, exactly."""
        if not 0 <= radius <= MAX_RADIUS:
            raise ValueError(f"radius must be between 0 and {MAX_RADIUS}")
        queries = as_codes(queries)
        parts = [self._search_tables(queries, radius)]
        if self._delta_ids:
            parts.append(
                brute_force(queries, np.concatenate(self._delta_codes), np.concatenate(self._delta_ids), radius)
            )
        return _concat(parts)

    def _search_tables(self, queries: np.ndarray, radius: int) -> Found:
        n, count = len(self._codes), len(queries)
        if not n or not count:
            return Found.empty()
        masks = _probe_masks(radius // CHUNKS)
        table_base = (np.arange(CHUNKS, dtype=np.int64) * (CHUNK_VALUES + 1))[None, :, None]
        keys = ((queries.view(np.uint16).astype(np.int64)[:, :, None] ^ masks[None, None, :]) + table_base).ravel()
        starts = self._flat_offsets[keys]
        lengths = self._flat_offsets[keys + 1] - starts
        total = int(lengths.sum())
        if not total:
            return Found.empty()
        # The buckets' rows, concatenated: position i of bucket j is starts[j] + (i - where bucket j begins).
        shift = np.repeat(np.cumsum(lengths) - lengths - starts, lengths)
        rows = self._rows[np.arange(total, dtype=np.int64) - shift].astype(np.int64)
        per_query = lengths.reshape(count, -1).sum(axis=1)
        q64 = queries.view(np.uint64)
        dist = np.bitwise_count(self._words[0][rows] ^ np.repeat(q64[:, 0], per_query)).astype(np.int32)
        dist += np.bitwise_count(self._words[1][rows] ^ np.repeat(q64[:, 1], per_query))
        keep = np.flatnonzero(dist <= radius)
        rows, dist = rows[keep], dist[keep]
        query = np.repeat(np.arange(count, dtype=np.int64), per_query)[keep]
        dist += np.bitwise_count(self._words[2][rows] ^ q64[query, 2])
        dist += np.bitwise_count(self._words[3][rows] ^ q64[query, 3])
        ok = (dist <= radius) & self._alive[rows]
        query, rows, dist = query[ok], rows[ok], dist[ok]
        # A pair found through several chunks is one answer.
        pairs, first = np.unique(query * n + rows, return_index=True)
        return Found(pairs // n, self._ids[pairs % n], dist[first])


def within(queries, codes, ids, radius: int) -> Found:
    """Every (question, entry) pair within `radius`: by brute force for small sets, through an index otherwise."""
    queries, codes = as_codes(queries), as_codes(codes)
    ids = np.asarray(ids, dtype=np.int64)
    if len(queries) * len(codes) <= 4_000_000:
        return brute_force(queries, codes, ids, radius)
    return HashIndex(codes, ids).search(queries, radius)
