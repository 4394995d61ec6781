"""`make run`'s first training set and demo listings: the prohibited class against everything else."""

import pytest

from moderation.devstack import desk
from moderation.devstack.demo import DEMO_ALLOWED, DEMO_LISTINGS, DEMO_PROHIBITED, demo_photo_pools


def test_the_first_training_set_is_exported_as_a_mixture_under_one_allowed_label(tmp_path):
    argv = desk.export_mixture(tmp_path, "train", 300)
    assert argv[1:4] == ["-m", "classifier", "export-mixture"]
    flags = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert flags == {
        "--out": str(tmp_path),
        "--prohibited": DEMO_PROHIBITED,
        "--allowed-label": DEMO_ALLOWED,
        "--split": "train",
        "--per-class": "300",
    }


@pytest.mark.parametrize("kind", sorted({kind for *_, kinds in DEMO_LISTINGS for kind in kinds}))
def test_every_kind_a_demo_listing_names_is_found_in_an_exported_mixture(tmp_path, kind):
    allowed = tmp_path / DEMO_ALLOWED
    (tmp_path / DEMO_PROHIBITED).mkdir(parents=True)
    allowed.mkdir()
    (tmp_path / DEMO_PROHIBITED / "test-00001.png").write_bytes(b"p")
    # File names as export-mixture writes them: a class prefix, or <source>-<name> for other photos.
    for name in ("Coat-test-00010.png", "Sneaker-test-00020.png", "Bag-test-00030.png", "Shirt-test-00040.png",
                 "scikit-image-chelsea.png", "synthetic-solid-12-0.png", "synthetic-split-12-1.png"):  # fmt: skip
        (allowed / name).write_bytes(b"a")
    pools = demo_photo_pools(tmp_path)
    assert pools[kind], kind
    if kind != DEMO_PROHIBITED:
        assert all(path.parent == allowed and path.name.startswith(kind) for path in pools[kind])
