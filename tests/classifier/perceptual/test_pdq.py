"""PDQ hashes of real photos (scikit-image's samples): copies match, other photos and flat images do not."""

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import data

from classifier.perceptual.pdq import (
    CENTRE_MARGIN,
    DIHEDRAL,
    HashFormatError,
    center_crop_hashes,
    distance,
    hash_image,
    parse_hex,
    split_dihedral,
)

MATCH = 31


def photo(name: str = "chelsea") -> Image.Image:
    return Image.fromarray(getattr(data, name)())


def encoded(image: Image.Image, quality: int = 90) -> bytes:
    output = io.BytesIO()
    image.convert("RGB").save(output, format="JPEG", quality=quality)
    return output.getvalue()


@pytest.fixture(scope="module")
def cat():
    return hash_image(encoded(photo()))


def test_a_hash_is_256_bits_with_its_eight_dihedral_variants_and_a_quality(cat):
    assert len(cat.hash) == 32 and len(cat.hex) == 64
    assert len(cat.dihedral) == len(DIHEDRAL) == 8 and cat.dihedral[0] == cat.hash
    assert len(set(cat.dihedral)) == 8
    assert 50 <= cat.quality <= 100
    assert split_dihedral(cat.dihedral_hex) == list(cat.dihedral)


@pytest.mark.parametrize(
    "transform",
    [
        lambda im: Image.open(io.BytesIO(encoded(im, quality=40))),
        lambda im: im.resize((im.width // 2, im.height // 2)),
        lambda im: ImageEnhance.Brightness(im).enhance(1.25),
        lambda im: ImageEnhance.Brightness(im).enhance(0.75),
    ],
    ids=["jpeg40", "half-size", "brighter", "darker"],
)
def test_a_reencoded_resized_or_brightened_copy_is_within_the_match_distance(cat, transform):
    copy = hash_image(encoded(transform(photo())))
    assert distance(copy.hash, cat.hash) <= MATCH


def test_a_mirrored_or_rotated_copy_matches_one_of_the_variants_not_the_original(cat):
    for transform in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90):
        copy = hash_image(encoded(photo().transpose(transform)))
        assert distance(copy.hash, cat.hash) > MATCH
        assert min(distance(copy.hash, variant) for variant in cat.dihedral) <= MATCH


#: PIL's transpositions in the order of `DIHEDRAL`.
TURNS = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


@pytest.mark.parametrize("name", ["brick", "chelsea", "page"])
def test_each_variant_is_the_hash_of_the_photo_actually_rotated_or_mirrored(name):
    # A brick wall at 512 x 512 is where deriving the variants from the photo's own DCT was worst (86 bits).
    image = photo(name)
    pdq = hash_image(image)
    for turn, variant in zip(TURNS, pdq.dihedral, strict=True):
        turned = image if turn is None else image.transpose(turn)
        assert hash_image(turned).hash == variant


@pytest.mark.parametrize("name", ["brick", "grass", "page"])
def test_a_mirrored_or_rotated_copy_of_fine_texture_matches_too(name):
    original = hash_image(encoded(photo(name)))
    for transform in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90):
        copy = hash_image(encoded(photo(name).transpose(transform)))
        assert min(distance(variant, original.hash) for variant in copy.dihedral) <= 8


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coins", "page", "text"])
def test_hashes_and_quality_are_bit_for_bit_the_reference_implementation(name):
    import pdqhash

    pixels = np.ascontiguousarray(np.asarray(photo(name).convert("RGB")))
    pdq = hash_image(Image.fromarray(pixels))
    for turn, variant in zip(TURNS, pdq.dihedral, strict=True):
        turned = pixels if turn is None else np.asarray(Image.fromarray(pixels).transpose(turn))
        bits, quality = pdqhash.compute(np.ascontiguousarray(turned))
        assert np.packbits(bits.astype(np.uint8)).tobytes() == variant
        if turn is None:
            assert quality == pdq.quality


def test_different_photos_are_far_apart(cat):
    for name in ("astronaut", "coffee", "rocket"):
        other = hash_image(encoded(photo(name)))
        assert min(distance(other.hash, variant) for variant in cat.dihedral) > 60


def test_a_flat_or_tiny_image_has_a_quality_under_the_floor():
    flat = hash_image(encoded(Image.new("RGB", (300, 200), (128, 128, 128))))
    tiny = hash_image(encoded(Image.new("RGB", (4, 4), (10, 200, 30))))
    assert flat.quality < 50 and tiny.quality < 50
    assert flat.centre_quality < 50 and tiny.centre_quality < 50


@pytest.mark.parametrize("size", [(1, 1), (2, 7), (6, 6), (9, 4)])
def test_a_photo_too_small_for_a_centre_still_gets_one_that_never_matches(size):
    pdq = hash_image(encoded(Image.new("RGB", size, (10, 200, 30))))
    assert len(pdq.centre) == 8 and pdq.centre_quality == 0 and len(pdq.lookups()) == 16


@pytest.mark.parametrize("size", [(28, 28), (63, 300), (300, 40)])
def test_a_photo_with_a_side_under_64_pixels_has_quality_zero_and_so_never_matches(size):
    assert hash_image(encoded(photo().resize(size))).quality == 0


def test_a_photo_64_pixels_on_its_short_side_keeps_its_quality():
    assert hash_image(encoded(photo().resize((64, 96)))).quality > 49


def test_a_small_photo_is_hashed_from_a_smooth_resampling_to_64_not_repeated_pixels():
    small = photo().resize((28, 28))
    resampled = small.resize((64, 64), Image.Resampling.LANCZOS)
    assert hash_image(small).hash == hash_image(resampled).hash
    wide = photo().resize((200, 40))
    assert hash_image(wide).hash == hash_image(wide.resize((200, 64), Image.Resampling.LANCZOS)).hash


def test_large_photos_are_downsampled_first_so_their_size_changes_nothing_that_matters(cat):
    big = photo().resize((1800, 1200))
    assert distance(hash_image(encoded(big)).hash, cat.hash) <= 16


def test_hex_round_trips_and_bad_spellings_say_what_is_wrong(cat):
    assert parse_hex(cat.hex.upper()) == cat.hash
    with pytest.raises(HashFormatError, match="64 hex digits, this one has 63"):
        parse_hex(cat.hex[:-1])
    with pytest.raises(HashFormatError, match="0-9 and a-f"):
        parse_hex("z" * 64)


def test_distance_counts_differing_bits():
    a = bytes(32)
    assert distance(a, a) == 0
    assert distance(a, bytes([0xFF]) + bytes(31)) == 8
    assert distance(a, np.full(32, 0xFF, np.uint8).tobytes()) == 256


def test_pdq_does_not_follow_a_trim_but_a_centred_crop_hash_does(cat):
    image = photo()
    dx, dy = round(image.width * 0.025), round(image.height * 0.025)
    trimmed = hash_image(encoded(image.crop((dx, dy, image.width - dx, image.height - dy))))
    assert distance(trimmed.hash, cat.hash) > MATCH
    crops = center_crop_hashes(encoded(image))
    assert len(crops) == 2 and distance(trimmed.hash, crops[0].hash) <= 8


def test_the_centre_hash_is_the_hash_of_the_photo_with_its_borders_cut_and_looked_up_after_the_photo(cat):
    image = photo().convert("RGB")
    dx, dy = round(image.width * CENTRE_MARGIN), round(image.height * CENTRE_MARGIN)
    centre = hash_image(image.crop((dx, dy, image.width - dx, image.height - dy)), centre_margin=None)
    from_bytes = hash_image(encoded(image, quality=100))
    assert hash_image(image).centre == centre.dihedral and distance(from_bytes.centre[0], centre.hash) <= 8
    assert len(cat.centre) == 8 and cat.centre_quality == centre.quality > 49
    assert len(cat.centre_hex) == 8 * 64 and split_dihedral(cat.centre_hex) == list(cat.centre)
    lookups = cat.lookups()
    assert [code for code, _q in lookups] == [*cat.dihedral, *cat.centre]
    assert {q for _c, q in lookups[:8]} == {cat.quality} and {q for _c, q in lookups[8:]} == {cat.centre_quality}
    assert (
        hash_image(image, centre_margin=None).centre == () and len(hash_image(image, centre_margin=None).lookups()) == 8
    )


def test_a_centre_under_the_minimum_side_has_no_quality_while_the_photo_keeps_its_own():
    small = photo().resize((72, 72))  # its centre is 54 pixels a side
    pdq = hash_image(encoded(small))
    assert pdq.quality > 49 and pdq.centre_quality == 0 and len(pdq.centre) == 8


def test_a_caption_across_the_lower_part_leaves_the_centre_within_the_match_distance():
    from PIL import ImageDraw, ImageFont

    image = photo("rocket").convert("RGB")
    captioned = image.copy()
    ImageDraw.Draw(captioned).text(
        (image.width // 20, image.height - image.height // 8),
        "SALE 50% OFF - call 555 0199",
        font=ImageFont.load_default(size=image.height // 14),
        fill=(255, 255, 255),
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    original, copy = hash_image(encoded(image)), hash_image(encoded(captioned))
    assert distance(original.hash, copy.hash) > MATCH >= distance(original.centre[0], copy.centre[0])
