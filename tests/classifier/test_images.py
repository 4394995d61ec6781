"""Image decoding: sources, orientation, colour modes, resizing, draft mode and refusal of bad input."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from classifier.images import ImageDecodeError, decode_image

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def two_halves(width: int, height: int, top=RED, bottom=BLUE) -> Image.Image:
    image = Image.new("RGB", (width, height), top)
    image.paste(bottom, (0, height // 2, width, height))
    return image


def close_to(pixel, colour, tolerance=40):
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def test_bytes_path_and_str_give_the_same_pixels(tmp_path):
    data = encode(two_halves(40, 30))
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    from_bytes = decode_image(data, 16)
    assert from_bytes.shape == (16, 16, 3)
    assert from_bytes.dtype == np.uint8
    np.testing.assert_array_equal(from_bytes, decode_image(path, 16))
    np.testing.assert_array_equal(from_bytes, decode_image(str(path), 16))
    assert close_to(from_bytes[2, 8], RED)
    assert close_to(from_bytes[13, 8], BLUE)


def test_whole_frame_is_kept_not_cropped_or_padded():
    image = Image.new("RGB", (90, 30), RED)
    image.paste(GREEN, (0, 0, 15, 30))
    decoded = decode_image(encode(image), 30)
    # The green strip at the left edge survives (a center crop would lose it) and fills the full height
    # (letterbox padding would leave white bands above and below).
    assert close_to(decoded[0, 1], GREEN)
    assert close_to(decoded[29, 1], GREEN)
    assert close_to(decoded[15, 20], RED)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    data = encode(two_halves(60, 40), "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(data, 20)
    # After rotating clockwise the stored top (red) is on the right, the stored bottom (blue) on the left.
    assert close_to(decoded[10, 17], RED)
    assert close_to(decoded[10, 2], BLUE)


def test_malformed_exif_does_not_reject_the_photo():
    data = encode(two_halves(40, 40), "JPEG", quality=95, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    decoded = decode_image(data, 20)
    assert close_to(decoded[2, 10], RED)


def test_grayscale_becomes_rgb():
    decoded = decode_image(encode(Image.new("L", (20, 20), 77)), 10)
    assert decoded.shape == (10, 10, 3)
    assert (decoded == 77).all()


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 10, 20, 20))
    decoded = decode_image(encode(rgba), 20)
    assert tuple(decoded[2, 10]) == (255, 255, 255)
    assert tuple(decoded[17, 10]) == BLUE


def test_palette_with_transparent_index_is_composited_on_white():
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (0, 10, 20, 20))
    decoded = decode_image(encode(palette, transparency=0), 20)
    assert tuple(decoded[2, 10]) == (255, 255, 255)
    assert tuple(decoded[17, 10]) == GREEN


def test_sixteen_bit_images_are_scaled_not_clipped():
    deep = Image.fromarray(np.full((10, 10), 32768, dtype=np.uint16))
    decoded = decode_image(encode(deep), 10)
    assert abs(int(decoded[5, 5, 0]) - 127) <= 1


def test_arrays_are_accepted():
    gray = np.full((30, 20), 50, dtype=np.uint8)
    assert (decode_image(gray, 8) == 50).all()
    rgb = np.zeros((12, 12, 3), dtype=np.uint8)
    rgb[..., 2] = 200
    same_size = decode_image(rgb, 12)
    np.testing.assert_array_equal(same_size, rgb)
    assert decode_image(rgb, 6).shape == (6, 6, 3)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    assert (decode_image(rgba, 8) == 255).all()


@pytest.mark.parametrize(
    "array",
    [np.zeros((8, 8, 3), dtype=np.float32), np.zeros((8, 8, 2), dtype=np.uint8), np.zeros((0, 8), dtype=np.uint8)],
)
def test_bad_arrays_are_refused(array):
    with pytest.raises(ImageDecodeError):
        decode_image(array, 8)


def test_junk_empty_and_missing_sources_are_decode_errors(tmp_path):
    for source in (b"", b"definitely not an image", tmp_path / "missing.jpg"):
        with pytest.raises(ImageDecodeError):
            decode_image(source, 8)
    assert issubclass(ImageDecodeError, ValueError)
    with pytest.raises(TypeError):
        decode_image(12345, 8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_refused_not_half_decoded(fmt):
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2], 32)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("side", [40, 50])
def test_decompression_bombs_are_refused(monkeypatch, side):
    # 40x40 is in Pillow's warning band (1x..2x the limit), 50x50 beyond it: both must be errors.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (side, side), RED))
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(data, 8)


def test_large_jpeg_is_decoded_in_draft_mode(monkeypatch):
    data = encode(Image.new("RGB", (1600, 1200), RED), "JPEG")
    resized_from = []
    original_resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        resized_from.append(self.size)
        return original_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    decoded = decode_image(data, 224)
    assert close_to(decoded[100, 100], RED)
    # libjpeg scaled by 1/4 while decoding: 400x300 still covers 224x224, 1/8 (200x150) would not.
    assert resized_from == [(400, 300)]
