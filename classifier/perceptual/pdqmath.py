"""PDQ's arithmetic on a pixel array, for the photo and its 8 rotations and mirror images at once, in numpy.

The reference implementation (Meta's C++, which PyPI `pdqhash` wraps) blurs the photo's luminance with a tent
filter (two passes of a box filter along each axis, Jarosz's method), samples it at 64 x 64 points, takes the
16 x 16 lowest frequencies of its DCT and sets a bit for each above their median. It derives the 7 rotated and
mirrored hashes from the photo's own DCT by changing signs (`pdqhash.compute_dihedral`). That shortcut is exact
for the 64 x 64 samples, but the samples of a mirrored photo are not the mirrored samples: a box of even width
(2 to 4 pixels for photos of 129 to 512 pixels on a side) reaches one pixel further right than left, and for a
side that is a multiple of 128 (the 512 x 512 of every large photo) the sample points sit half a pixel right of
the cells' centres. A mirrored copy is thus seen ~1.5 pixels off; on fine texture (a brick wall, grass, a page of
text) its hash was 32 to 86 bits from the derived variant, and a mirrored or rotated re-upload went unmatched.

Here every variant is the reference hash of the pixels actually rotated or mirrored. Rotations and mirror images
are the four flips (none, left-right, up-down, both) each optionally transposed, and transposing commutes with
the filter, so 4 blurred samplings give all 8. The filter and sampling are linear, one small weight table per
axis (a band of at most 2 x 4 - 1 taps per sample for sides up to 512), and each flip is the same table read
backwards, so the four samplings cost about one. The result agrees bit for bit with `pdqhash.compute` of the
transformed pixels on the photos the tests use, in about a quarter of `pdqhash.compute_dihedral`'s time for a
512 x 512 photo (1.6-2.9 ms against 9-12 ms on a busy 2-core machine; half of the binding's time is its float64
luminance conversion in numpy).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SAMPLES = 64
COEFFICIENTS = 16
#: The reference hasher gives an empty hash of quality 0 to anything smaller on a side.
MIN_SIDE = 5
LUMA = (np.float32(0.299), np.float32(0.587), np.float32(0.114))

_rows = np.arange(COEFFICIENTS)[:, None] + 1
_cols = np.arange(SAMPLES)[None, :]
#: The DCT rows PDQ keeps (frequencies 1 to 16; the constant term is left out), as the reference builds them.
DCT = (math.sqrt(2 / SAMPLES) * np.cos((math.pi / 2 / SAMPLES) * _rows * (2 * _cols + 1))).astype(np.float32)


def _box_window(position: int, length: int, width: int) -> range:
    """The inputs the reference box filter averages for one output: `width` of them, one more right than left
    when `width` is even, cut at the ends."""
    half = (width + 2) // 2
    return range(max(0, position + half - width), min(length - 1, position + half - 1) + 1)


@lru_cache(maxsize=1024)
def axis_taps(length: int) -> tuple[np.ndarray, np.ndarray]:
    """For an axis of `length` pixels: which inputs each of the 64 samples reads and with what weight, after
    two box passes, as (indices, weights) of shape (128, taps); rows 64-127 are the same axis reversed."""
    width = (length + 2 * SAMPLES - 1) // (2 * SAMPLES)
    # The reference picks the pixel under each cell's centre, rounding down.
    centres = [int(((i + 0.5) * length) / SAMPLES) for i in range(SAMPLES)]
    taps = []
    for centre in centres:
        weights: dict[int, float] = {}
        outer = _box_window(centre, length, width)
        for middle in outer:
            inner = _box_window(middle, length, width)
            for source in inner:
                weights[source] = weights.get(source, 0.0) + 1.0 / (len(outer) * len(inner))
        taps.append(sorted(weights.items()))
    count = max(len(row) for row in taps)
    indices = np.zeros((SAMPLES, count), np.int64)
    weights = np.zeros((SAMPLES, count), np.float32)
    for i, row in enumerate(taps):
        indices[i, : len(row)] = [source for source, _ in row]
        weights[i, : len(row)] = [weight for _, weight in row]
    return np.concatenate([indices, length - 1 - indices]), np.concatenate([weights, weights])


def luma(rgb: np.ndarray) -> np.ndarray:
    """The reference's luminance (ITU-R 601 weights) of an (h, w, 3) uint8 array, as float32."""
    return rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2]


def flip_samples(rgb: np.ndarray) -> np.ndarray:
    """The reference's 64 x 64 samples of the photo flipped four ways, as a (128, 128) float32 array: rows
    0-63 are the photo as it is and 64-127 upside down; columns 0-63 as it is and 64-127 left-right mirrored."""
    values = luma(rgb)
    row_index, row_weight = axis_taps(values.shape[0])
    col_index, col_weight = axis_taps(values.shape[1])
    # Sums of a few shifted slices rather than matrix products: no BLAS threads on a busy worker.
    along_rows = sum(row_weight[:, k, None] * values[row_index[:, k]] for k in range(row_index.shape[1]))
    return sum(col_weight[None, :, k] * along_rows[:, col_index[:, k]] for k in range(col_index.shape[1]))


def quality(samples: np.ndarray) -> int:
    """The reference's quality (0-100): the sum of the samples' quantised gradients, scaled."""
    # As the reference's `int d = ((u - v) * 100) / 255`: float32 arithmetic, truncated towards zero.
    down = np.trunc(((samples[:-1, :] - samples[1:, :]) * np.float32(100)) / np.float32(255))
    across = np.trunc(((samples[:, :-1] - samples[:, 1:]) * np.float32(100)) / np.float32(255))
    return min(100, int(np.abs(down).sum() + np.abs(across).sum()) // 90)


def _bits(coefficients: np.ndarray) -> list[bytes]:
    """Each (16, 16) coefficient block as 32 bytes: bit k (row-major) set when above the block's median, the
    highest bit first as the reference's hex spelling has it."""
    flat = coefficients.reshape(len(coefficients), -1)
    # The reference's median of 256 values is the 128th smallest.
    median = np.partition(flat, 127, axis=1)[:, 127:128]
    return [np.packbits(row[::-1]).tobytes() for row in flat > median]


def dihedral_hashes(rgb: np.ndarray) -> tuple[list[bytes], int]:
    """The PDQ hashes of an (h, w, 3) uint8 photo rotated and mirrored, in `pdqhash.compute_dihedral`'s order
    (as it is, rotated 90, 180, 270 degrees counter-clockwise, flipped upside down, mirrored left-right,
    transposed, transposed across the other diagonal), and the photo's quality."""
    height, width = rgb.shape[:2]
    if height < MIN_SIDE or width < MIN_SIDE:
        return [bytes(32)] * 8, 0
    samples = flip_samples(rgb)
    blocks = samples.reshape(2, SAMPLES, 2, SAMPLES).transpose(0, 2, 1, 3)
    same, mirrored, upside_down, both = (DCT @ blocks[i, j] @ DCT.T for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    variants = np.stack(
        [same, mirrored.T, both, upside_down.T, upside_down, mirrored, same.T, both.T],
    )
    return _bits(variants), quality(blocks[0, 0])
