"""PDQ's arithmetic in numpy against the reference C++ (PyPI `pdqhash`), on shapes where the filter is awkward."""

import numpy as np
import pdqhash
import pytest
from PIL import Image

from classifier.perceptual.pdqmath import axis_taps, dihedral_hashes

#: numpy's turns in the order of the variants.
TURNS = (
    lambda a: a,
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3),
    lambda a: a[::-1],
    lambda a: a[:, ::-1],
    lambda a: a.transpose(1, 0, 2),
    lambda a: np.rot90(a, 2).transpose(1, 0, 2),
)


def reference(pixels: np.ndarray) -> tuple[bytes, int]:
    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return np.packbits(bits.astype(np.uint8)).tobytes(), quality


@pytest.mark.parametrize(
    "shape",
    # Odd and even box widths, sides that are multiples of 128 (off-centre samples), tiny and exactly 64.
    [(5, 9), (28, 28), (64, 64), (97, 130), (256, 384), (300, 451), (512, 512), (511, 257)],
)
def test_every_variant_agrees_bit_for_bit_with_the_reference_on_the_turned_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    # Smooth noise: a photo-like spectrum, so the bits near the median are not all ties.
    small = rng.integers(0, 256, (max(2, shape[0] // 4), max(2, shape[1] // 4), 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(small).resize(shape[::-1], Image.Resampling.BICUBIC))
    hashes, quality = dihedral_hashes(pixels)
    assert quality == reference(pixels)[1]
    for turn, variant in zip(TURNS, hashes, strict=True):
        assert variant == reference(turn(pixels))[0]


def test_an_image_under_five_pixels_on_a_side_has_an_empty_hash_of_quality_zero_as_in_the_reference():
    pixels = np.full((4, 40, 3), 200, np.uint8)
    pixels[:, ::2] = 10
    hashes, quality = dihedral_hashes(pixels)
    assert hashes == [bytes(32)] * 8 and quality == 0
    assert reference(pixels) == (bytes(32), 0)


def test_the_blur_weights_of_each_sample_sum_to_one_and_mirror_for_the_reversed_axis():
    indices, weights = axis_taps(512)
    assert indices.shape == (128, 7)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(indices[64:], 511 - indices[:64])
