import numpy as np

from classifier.cache import BottleneckCache


def test_round_trip_layout_and_no_temp_files(tmp_path):
    cache = BottleneckCache(tmp_path, "tiny", 32, variant="abc")
    sha = "ab" + "0" * 62
    assert cache.get(sha) is None
    cache.put(sha, np.arange(4, dtype=np.float32))
    assert cache.path(sha) == tmp_path / "tiny-32-abc" / "ab" / f"{sha}.npy"
    np.testing.assert_array_equal(cache.get(sha), np.arange(4, dtype=np.float32))
    assert sha in cache
    assert [p.name for p in cache.path(sha).parent.iterdir()] == [f"{sha}.npy"]


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = BottleneckCache(tmp_path, "tiny", 32)
    sha = "cd" + "1" * 62
    cache.put(sha, np.ones(3))
    cache.path(sha).write_bytes(b"\x93NUMPY truncated")
    assert cache.get(sha) is None
