"""PDQ hashes (256 bits and a quality 0-100) of a photo and of its 8 dihedral variants, and their hex spelling.

PDQ (Meta's photo hash) turns a photo into 256 bits that change little when the photo is re-encoded, resized,
lightly cropped or brightened; Hamming distance between two hashes says how alike the pictures are, and HMA's rule
is a match at distance <= 31 between hashes of quality >= 50 (a flat or tiny image has a low quality: its bits are
noise and would match anything). The hashes of the photo rotated and mirrored are made as well, each from the
pixels actually turned (`pdqmath`, bit for bit the reference C++ that PyPI `pdqhash` wraps), so a mirrored or
rotated re-upload is found by looking up all 8.

Photos larger than 512 pixels on a side are first resized to 512 x 512, as the reference hasher does, so a hash
made here agrees with one a hash-sharing programme made with the reference tool, and a 12-megapixel upload costs
the same as a small one.

Photos with a side under PDQ's 64 x 64 samples are another matter: the reference repeats their pixels to fill the
samples, and at HMA's distance of 31 bits look-alikes are not told apart. On Fashion-MNIST training items
(28 x 28 garments on a plain ground; `bench/small_photos.py`, two folds, `bench/results/small_photos.json`)
0.68-0.94% of 5,000 items outside a bank of 43,000 others matched one of them, against a target of 0.1%, while
a JPEG copy at quality 40 matched its original three times in four and a half-size copy never. So such a photo
gets quality 0, under every bank's floor, and never matches anything, as a flat or tiny image should
("quality under the floor"). Its hash is still made (the training split groups copies by distance alone), from
the photo resampled to 64 on its short sides with a Lanczos filter rather than PDQ's repeated pixels, which
brought copies closer and look-alikes apart a little (mean recall 0.703 to 0.710, false matches 0.87% to 0.73%):
the one place a hash made here differs from the reference tool's, for photos too small to match anyway.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.perceptual.pdqmath import dihedral_hashes

HASH_BITS = 256
HASH_BYTES = HASH_BITS // 8
HEX_LENGTH = HASH_BITS // 4
#: The reference hasher's downsampling size for larger photos.
DOWNSAMPLE = 512
#: Photos with a side shorter than this (PDQ's samples per side) have quality 0 and never match; chosen on
#: training photos by `bench/small_photos.py`, which also chose `SMALL_RESAMPLE`.
MIN_MATCH_SIDE = 64
#: How a side shorter than `MIN_MATCH_SIDE` is brought to it before hashing (None: PDQ's own repeated pixels).
SMALL_RESAMPLE = "lanczos"
#: Centred crops a bank also keeps of a photo it is given (share cut from each side): PDQ follows re-encoding,
#: resizing and brightness well but not cropping (2.5% off each side already moves a hash by ~45 bits), so a
#: seller trimming the borders of a taken-down photo is caught by matching the trimmed versions instead.
CROP_FRACTIONS = (0.025, 0.05)
#: Share cut from each side of a photo for its centre hash, which is looked up beside the photo's own and banked
#: beside it: a caption or a watermark a seller adds near the borders (a fourteenth of the height across the
#: lower part moves the hash of a real photo by 32 to 50 bits) leaves the centre nearly as it was. Chosen on
#: training photos by `bench/centre_margin.py` (`bench/results/centre_margin.json`).
CENTRE_MARGIN = 0.125
#: The order of the variants (`pdqhash.compute_dihedral`'s); index 0 is the photo as it is.
DIHEDRAL = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flip_vertical",
    "flip_horizontal",
    "flip_diagonal",
    "flip_antidiagonal",
)


class HashFormatError(ValueError):
    """A hash spelled wrong: not 64 hexadecimal digits."""


@dataclass(frozen=True)
class PdqHash:
    """A photo's hash, its quality and the hashes of its 8 dihedral variants (`dihedral[0]` is `hash`), and the
    same of its centre (`CENTRE_MARGIN`; empty when not made)."""

    hash: bytes
    quality: int
    dihedral: tuple[bytes, ...]
    centre: tuple[bytes, ...] = ()
    centre_quality: int = 0

    @property
    def hex(self) -> str:
        """The 64-digit lower-case hex spelling used by PDQ tools and hash-sharing exports."""
        return self.hash.hex()

    @property
    def dihedral_hex(self) -> str:
        """The 8 variants' hex spellings joined (512 digits), as stored on an image."""
        return "".join(variant.hex() for variant in self.dihedral)

    @property
    def centre_hex(self) -> str:
        """The centre's 8 variants' hex spellings joined, as stored on an image ("" when not made)."""
        return "".join(variant.hex() for variant in self.centre)

    def lookups(self) -> list[tuple[bytes, int]]:
        """What a bank lookup searches for, each with the quality it is judged by: the 8 variants of the photo,
        then the 8 of its centre. A query's position in this list is the match's `variant`."""
        return [(variant, self.quality) for variant in self.dihedral] + [
            (variant, self.centre_quality) for variant in self.centre
        ]


def parse_hex(text: str) -> bytes:
    """The 32 bytes of a 64-digit hex hash; raises `HashFormatError` naming what is wrong."""
    value = (text or "").strip().lower()
    if len(value) != HEX_LENGTH:
        raise HashFormatError(f"a PDQ hash has {HEX_LENGTH} hex digits, this one has {len(value)}")
    try:
        return bytes.fromhex(value)
    except ValueError as error:
        raise HashFormatError("a PDQ hash has only the digits 0-9 and a-f") from error


def split_dihedral(text: str) -> list[bytes]:
    """The variants stored as one string by `PdqHash.dihedral_hex`, back as bytes."""
    return [parse_hex(text[i : i + HEX_LENGTH]) for i in range(0, len(text), HEX_LENGTH)]


def distance(a: bytes, b: bytes) -> int:
    """Hamming distance between two hashes (bits that differ)."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def _image(source):
    """A PIL RGB image of `source`; a large JPEG is decoded at a reduced scale no smaller than the hasher's 512
    pixels (Pillow's draft mode: half the time of a 1600 x 1200 photo, the same hash)."""
    from PIL import Image

    if isinstance(source, bytes | bytearray | str | Path):
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)
        image.draft("RGB", (DOWNSAMPLE, DOWNSAMPLE))
        return image.convert("RGB")
    return source.convert("RGB")


def _pixels(image, small_resample: str | None) -> np.ndarray:
    """An RGB uint8 array of a PIL image, downsampled like the reference hasher, short sides brought to
    `MIN_MATCH_SIDE` with `small_resample` (a Pillow filter's name; None leaves them)."""
    from PIL import Image

    if image.width > DOWNSAMPLE or image.height > DOWNSAMPLE:
        image = image.resize((DOWNSAMPLE, DOWNSAMPLE), Image.Resampling.BILINEAR)
    elif small_resample and min(image.size) < MIN_MATCH_SIDE:
        size = (max(image.width, MIN_MATCH_SIDE), max(image.height, MIN_MATCH_SIDE))
        image = image.resize(size, Image.Resampling[small_resample.upper()])
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def hash_image(
    source,
    *,
    min_match_side: int = MIN_MATCH_SIDE,
    small_resample: str | None = SMALL_RESAMPLE,
    centre_margin: float | None = CENTRE_MARGIN,
) -> PdqHash:
    """Hash a photo (encoded bytes, a path or a PIL image) and its dihedral variants, each from the pixels
    actually rotated or mirrored (`pdqmath` says why), and its centre with `centre_margin` of the width and
    height cut from each side (None: no centre hash). A photo, or a centre, with a side under `min_match_side`
    pixels gets quality 0 (the keyword arguments are for choosing the defaults on training photos).

    Raises what Pillow raises for an image it cannot decode.
    """
    image = _image(source)
    pdq = _hash_pixels(image, min_match_side, small_resample)
    if not centre_margin:
        return pdq
    centre = _hash_pixels(centred_crop(image, centre_margin), min_match_side, small_resample)
    return PdqHash(
        hash=pdq.hash, quality=pdq.quality, dihedral=pdq.dihedral, centre=centre.dihedral, centre_quality=centre.quality
    )


def _hash_pixels(image, min_match_side: int, small_resample: str | None) -> PdqHash:
    hashes, quality = dihedral_hashes(_pixels(image, small_resample))
    if min(image.size) < min_match_side:
        quality = 0
    return PdqHash(hash=hashes[0], quality=quality, dihedral=tuple(hashes))


def centred_crop(image, margin: float):
    """A PIL image with `margin` of its width and height cut from each side (at least a pixel left each way)."""
    dx = min(round(image.width * margin), (image.width - 1) // 2)
    dy = min(round(image.height * margin), (image.height - 1) // 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def center_crop_hashes(source, fractions=CROP_FRACTIONS, **options) -> list[PdqHash]:
    """Hashes of centred crops of a photo, `fractions[i]` of its width and height cut from each side
    (`options` as for `hash_image`)."""
    image = _image(source)
    crops = []
    for fraction in fractions:
        crop = centred_crop(image, fraction)
        if crop.width >= 8 and crop.height >= 8:
            crops.append(hash_image(crop, **{**options, "centre_margin": None}))
    return crops
