"""Near-duplicate groups: photos linked by chains of matches within a distance, found in one pass.

The review queue shows near-duplicates as one entry and the training split keeps them on one side; both need the
same rule. "Within distance d" is not transitive (A near B near C with A far from C), so a group is a connected
component: everything reachable through matches. That is what keeps a training copy out of the holdout even when
the two copies are only linked through a third one.
"""

from __future__ import annotations

import numpy as np

from classifier.perceptual.index import HashIndex, as_codes
from classifier.perceptual.pdq import HASH_BYTES


def _find(parent: np.ndarray, item: int) -> int:
    root = item
    while parent[root] != root:
        root = parent[root]
    while parent[item] != root:
        parent[item], item = root, parent[item]
    return root


def component_labels(count: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """For `count` items and the pairs that match, each item's group label: the smallest index in its group."""
    parent = np.arange(count)
    for a, b in pairs:
        root_a, root_b = _find(parent, int(a)), _find(parent, int(b))
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    return np.array([_find(parent, i) for i in range(count)], dtype=np.int64)


def near_duplicate_labels(dihedral: list[bytes | None], radius: int) -> np.ndarray:
    """Group items by their hashes: `dihedral[i]` is item i's 8 variants joined (256 bytes; the first is the
    photo as it is), or None for an item without a hash, which stays alone.

    Item i matches item j when any variant of i is within `radius` of j as it is: a mirrored or rotated copy is a
    copy. Labels are the smallest index of each group, so they follow the input order (give it oldest first).
    """
    hashed = [i for i, value in enumerate(dihedral) if value]
    if not hashed:
        return np.arange(len(dihedral), dtype=np.int64)
    variants = as_codes(np.frombuffer(b"".join(dihedral[i] for i in hashed), dtype=np.uint8))
    per_item = len(variants) // len(hashed)
    originals = variants.reshape(len(hashed), per_item, HASH_BYTES)[:, 0, :]
    index = HashIndex(originals, np.asarray(hashed, dtype=np.int64))
    found = index.search(variants, radius)
    owners = np.asarray(hashed, dtype=np.int64)[found.query // per_item]
    pairs = [(a, b) for a, b in zip(owners.tolist(), found.ids.tolist(), strict=True) if a != b]
    return component_labels(len(dihedral), pairs)
