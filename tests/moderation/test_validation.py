import hashlib
import io
import warnings

import pytest
from django.test import override_settings
from PIL import Image

from moderation.validation import ImageValidationError, validate_image
from tests.support import images


def refused(data, **kwargs) -> ImageValidationError:
    with pytest.raises(ImageValidationError) as info:
        validate_image(images.upload(data, **kwargs))
    return info.value


@pytest.mark.parametrize(
    ("maker", "fmt", "ext"),
    [(images.jpeg_bytes, "JPEG", "jpg"), (images.png_bytes, "PNG", "png"), (images.webp_bytes, "WEBP", "webp")],
)
def test_accepted_formats_are_reencoded_with_their_extension(maker, fmt, ext):
    data = maker()
    result = validate_image(images.upload(data, name="whatever.bin", content_type="application/octet-stream"))
    assert (result.format, result.extension) == (fmt, ext)
    assert (result.width, result.height) == (32, 24)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    assert Image.open(io.BytesIO(result.content)).format == fmt


def test_type_is_decided_by_content_not_name():
    result = validate_image(images.upload(images.png_bytes(), name="photo.jpg", content_type="image/jpeg"))
    assert result.format == "PNG"


def test_header_only_bomb_is_refused_before_decoding():
    error = refused(images.bomb_png(20_000, 20_000))
    assert error.code == "too_many_pixels"
    assert error.status == 413


def test_pillow_bomb_warning_is_an_error(monkeypatch):
    # Between 1x and 2x Pillow's own limit Pillow only warns; that must still refuse the image.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        error = refused(images.png_bytes(size=(32, 24)))
    assert error.code == "too_many_pixels"


@override_settings(VIGIA_MAX_IMAGE_PIXELS=500)
def test_pixel_limit_setting_is_enforced():
    assert refused(images.png_bytes(size=(32, 24))).code == "too_many_pixels"


def test_truncated_jpeg_fails_full_decode():
    assert refused(images.truncated_jpeg()).code == "corrupt"


def test_junk_is_refused():
    assert refused(images.junk_bytes(), name="x.jpg").code == "not_an_image"


def test_polyglot_keeps_only_pixels():
    result = validate_image(images.upload(images.polyglot_png(), name="x.png"))
    assert result.format == "PNG"
    assert b"<script" not in result.content
    assert b"html" not in result.content


@pytest.mark.parametrize(
    ("maker", "name"),
    [(images.gif_bytes, "GIF"), (images.bmp_bytes, "BMP"), (images.pdf_bytes, "PDF"), (images.svg_bytes, "SVG")],
)
def test_wrong_types_are_refused_by_name(maker, name):
    error = refused(maker(), name="x.jpg")
    assert error.code == "unsupported_type"
    assert name in error.detail


def test_empty_file_is_refused():
    assert refused(b"").code == "empty"


@override_settings(VIGIA_MAX_UPLOAD_BYTES=500)
def test_oversized_file_is_refused_with_413():
    error = refused(images.jpeg_bytes(size=(200, 200)))
    assert (error.code, error.status) == ("too_large", 413)


@override_settings(VIGIA_MAX_UPLOAD_BYTES=500)
def test_size_is_checked_on_the_bytes_not_only_the_declared_size():
    data = images.jpeg_bytes(size=(200, 200))

    class Lying(io.BytesIO):
        size = 10

    with pytest.raises(ImageValidationError) as info:
        validate_image(Lying(data))
    assert info.value.code == "too_large"


def test_exif_orientation_is_applied_and_exif_dropped():
    data = images.exif_rotated_jpeg(size=(40, 20), orientation=6)
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == 6
    result = validate_image(images.upload(data))
    assert (result.width, result.height) == (20, 40)
    stored = Image.open(io.BytesIO(result.content))
    assert stored.size == (20, 40)
    assert not stored.getexif()
    # The red top row of the landscape original is the right-hand edge after a 90 degree turn.
    red = stored.convert("RGB").getpixel((17, 20))
    assert red[0] > 200 and red[1] < 80
    left = stored.convert("RGB").getpixel((2, 20))
    assert left[1] > 200


def test_malformed_exif_is_tolerated():
    data = images.jpeg_bytes()
    # An APP1 segment that claims to be EXIF but holds garbage.
    broken = data[:2] + b"\xff\xe1\x00\x10Exif\x00\x00garbage!!" + data[2:]
    result = validate_image(images.upload(broken))
    assert result.format == "JPEG"


def test_multi_picture_jpeg_is_accepted_as_its_first_picture():
    result = validate_image(images.upload(images.mpo_jpeg()))
    assert (result.format, result.extension, result.width, result.height) == ("JPEG", "jpg", 32, 24)
    stored = Image.open(io.BytesIO(result.content))
    assert stored.format == "JPEG" and getattr(stored, "n_frames", 1) == 1


def test_formats_that_cost_more_to_decode_have_a_lower_pixel_cap(settings):
    """15 megapixels are under the cap for a JPEG but over it for a PNG, which costs three times as much to decode;
    the header alone decides, so nothing is decoded."""
    settings.VIGIA_MAX_IMAGE_PIXELS = 40_000_000
    with pytest.raises(ImageValidationError) as refused:
        validate_image(images.upload(images.bomb_png(width=5000, height=3000), name="big.png"))
    assert refused.value.code == "too_many_pixels" and "limit for PNG is 13333333" in refused.value.detail
