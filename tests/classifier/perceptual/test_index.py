"""The multi-index hash table answers exactly what comparing with every entry would, and stays exact as it changes."""

import numpy as np
import pytest

from classifier.perceptual.groups import component_labels, near_duplicate_labels
from classifier.perceptual.index import MERGE_AT, HashIndex, brute_force


def flipped(codes, rng, bits):
    out = codes.copy()
    for row, count in zip(out, bits, strict=True):
        for bit in rng.choice(256, count, replace=False):
            row[bit // 8] ^= 1 << (bit % 8)
    return out


@pytest.fixture(scope="module")
def bank():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (20_000, 32), dtype=np.uint8)
    ids = np.arange(len(codes)) * 5 + 11
    queries = flipped(codes[rng.choice(len(codes), 300)], rng, rng.integers(0, 50, 300))
    return codes, ids, queries


@pytest.mark.parametrize("radius", [0, 1, 16, 31, 32, 47, 63])
def test_search_equals_brute_force_at_every_radius(bank, radius):
    codes, ids, queries = bank
    found, expected = HashIndex(codes, ids).search(queries, radius), brute_force(queries, codes, ids, radius)
    assert len(expected) > 0
    assert found.query.tolist() == expected.query.tolist()
    assert found.ids.tolist() == expected.ids.tolist()
    assert found.distances.tolist() == expected.distances.tolist()


def test_added_entries_are_found_at_once_and_after_the_merge(bank):
    codes, ids, queries = bank
    index = HashIndex(codes[:100], ids[:100])
    index.add(queries[:3], [1, 2, 3])
    assert set(index.search(queries[:3], 0).ids.tolist()) == {1, 2, 3}
    rng = np.random.default_rng(0)
    index.add(rng.integers(0, 256, (MERGE_AT, 32), dtype=np.uint8), np.arange(MERGE_AT) + 10**6)
    assert set(index.search(queries[:3], 0).ids.tolist()) == {1, 2, 3}
    assert len(index) == 100 + 3 + MERGE_AT


def test_removed_entries_are_never_found_again(bank):
    codes, ids, _ = bank
    index = HashIndex(codes[:50], ids[:50])
    index.add(codes[50:52], ids[50:52])
    index.remove([ids[0], ids[50]])
    assert ids[0] not in index.search(codes[:1], 0).ids
    assert ids[50] not in index.search(codes[50:51], 0).ids
    index.merge()
    assert len(index) == 50 and ids[0] not in index.search(codes[:1], 31).ids


def test_a_radius_past_the_supported_one_is_refused(bank):
    with pytest.raises(ValueError, match="radius"):
        HashIndex(bank[0][:10], bank[1][:10]).search(bank[0][:1], 64)


def test_an_empty_index_answers_nothing():
    assert len(HashIndex().search(np.zeros((2, 32), np.uint8), 31)) == 0


def test_groups_are_connected_components_through_any_variant():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    b = flipped(a, rng, [25])  # near a
    c = flipped(b, rng, [25])  # near b, maybe far from a
    far = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    mirrored_of_far = rng.integers(0, 256, (1, 32), dtype=np.uint8)

    def item(original, *others):
        variants = [original, *others] + [rng.integers(0, 256, (1, 32), dtype=np.uint8) for _ in range(7 - len(others))]
        return np.concatenate(variants).tobytes()

    # The last item's second variant is `far` itself: a mirrored copy of it.
    items = [item(a), item(b), item(c), item(far), None, item(mirrored_of_far, far)]
    labels = near_duplicate_labels(items, 31).tolist()
    assert labels[:3] == [0, 0, 0]
    assert labels[3] == labels[5] == 3
    assert labels[4] == 4


def test_component_labels_take_the_smallest_member():
    assert component_labels(5, [(4, 1), (1, 3)]).tolist() == [0, 1, 2, 1, 1]
