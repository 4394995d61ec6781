"""Photos of other things: synthetic ones reproducible from a seed, real ones found in installed packages, a
split that keeps each photo on one side, and exports that are byte-identical run after run."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from classifier import other_photos
from classifier.other_photos import OtherPhoto, synthetic_image, synthetic_photos


def test_synthetic_photos_cycle_through_the_kinds_and_repeat_exactly():
    first, again = synthetic_photos(12, seed=7), synthetic_photos(12, seed=7)
    assert [photo.name.split("-")[0] for photo in first[:6]] == list(other_photos.SYNTHETIC_KINDS)
    assert [photo.key for photo in first] == [photo.key for photo in again]
    assert all(np.array_equal(np.asarray(a.image()), np.asarray(b.image())) for a, b in zip(first, again, strict=True))
    other_seed = synthetic_photos(12, seed=8)
    assert not np.array_equal(np.asarray(first[4].image()), np.asarray(other_seed[4].image()))


@pytest.mark.parametrize("kind", other_photos.SYNTHETIC_KINDS)
def test_each_synthetic_kind_is_an_rgb_image_of_its_kind(kind):
    pixels = np.asarray(synthetic_image(kind, seed=3, size=96))
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
    distinct = len(np.unique(pixels.reshape(-1, 3), axis=0))
    if kind == "solid":
        assert distinct == 1
    elif kind in ("split", "stripes"):
        assert distinct == 2
    else:
        assert distinct > 2


def test_unknown_kinds_and_negative_counts_are_refused():
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        synthetic_photos(3, kinds=["plaid"])
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        synthetic_image("plaid", seed=0)
    with pytest.raises(ValueError, match="negative"):
        synthetic_photos(-1)


def test_darknet_photos_are_the_image_files_of_its_folder(tmp_path):
    for name, mode in (("dog.jpg", "RGB"), ("scream.png", "P"), ("eagle.JPG", "L")):
        Image.new(mode, (40, 30)).save(tmp_path / name)
    (tmp_path / "coco.names").write_text("person\n")
    photos = other_photos.darknet_photos(tmp_path)
    assert [photo.key for photo in photos] == ["darknet/dog", "darknet/eagle", "darknet/scream"]
    assert all(photo.image().mode == "RGB" and photo.image().size == (40, 30) for photo in photos)
    assert other_photos.darknet_photos(tmp_path / "absent") == []


def test_the_installed_packages_provide_real_photos_of_other_things():
    photos = other_photos.real_photos()
    sources = {photo.source for photo in photos}
    assert {"scikit-image", "foolbox"} <= sources  # both are in requirements.txt
    assert "scikit-image/chelsea" in {photo.key for photo in photos}
    # foolbox's Fashion-MNIST samples are the product dataset itself, not "something else".
    assert not any(photo.name.lower().startswith("fashion") for photo in photos)
    chelsea = next(photo for photo in photos if photo.key == "scikit-image/chelsea")
    assert chelsea.image().mode == "RGB" and chelsea.content()[:2] == b"\xff\xd8"


def test_the_split_follows_the_key_and_holds_about_its_share():
    photos = synthetic_photos(2000, seed=1)
    test = [photo for photo in photos if other_photos.in_test_split(photo, 0.25)]
    assert 0.21 < len(test) / len(photos) < 0.29
    renamed = [OtherPhoto(photo.source, photo.name) for photo in photos]
    assert [other_photos.in_test_split(photo, 0.25) for photo in renamed] == [
        other_photos.in_test_split(photo, 0.25) for photo in photos
    ]


def test_exports_are_byte_identical(tmp_path):
    photos = synthetic_photos(6, seed=2)
    assert other_photos.export_other_photos(tmp_path / "a", photos, size=64) == 6
    other_photos.export_other_photos(tmp_path / "b", photos, size=64)

    def digests(folder):
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}

    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert all(Image.open(path).size == (64, 64) for path in (tmp_path / "a").iterdir())
