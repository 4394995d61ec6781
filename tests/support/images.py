"""Test images made in memory, so no test depends on files checked into the repository.

Good ones in each accepted format, distinct noisy photos a tiny model learns, real Fashion-MNIST photos, and the
bad inputs uploads must refuse.
"""

import gzip
import io
import itertools
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

#: The two classes a randomly initialised `tiny` backbone separates easily: mostly red is "bad", mostly blue "ok".
PROHIBITED = "bad"
ALLOWED = "ok"
PROHIBITED_COLOR = (210, 40, 40)
ALLOWED_COLOR = (40, 60, 210)
COLORS = {PROHIBITED: PROHIBITED_COLOR, ALLOWED: ALLOWED_COLOR}
#: Saturated colours for the fake scorer, which scores the share of red.
RED = (250, 5, 5)
BLUE = (5, 5, 250)


def make_image(fmt: str = "JPEG", size: tuple[int, int] = (32, 24), color=(200, 30, 30), mode: str = "RGB") -> bytes:
    """A small solid image with a stripe so orientation is visible in its pixels."""
    image = Image.new(mode, size, color)
    stripe = (0, 0, 255) if mode == "RGB" else 0
    for x in range(size[0]):
        for y in range(min(4, size[1])):
            image.putpixel((x, y), stripe)
    output = io.BytesIO()
    image.save(output, format=fmt)
    return output.getvalue()


def jpeg_bytes(size=(32, 24), color=(200, 30, 30)) -> bytes:
    """A valid JPEG, reddish by default."""
    return make_image("JPEG", size, color)


def png_bytes(size=(32, 24), color=(30, 200, 30)) -> bytes:
    """A valid PNG, greenish by default."""
    return make_image("PNG", size, color)


def webp_bytes(size=(32, 24), color=(30, 30, 200)) -> bytes:
    """A valid WebP, bluish by default."""
    return make_image("WEBP", size, color)


def gif_bytes() -> bytes:
    """A real GIF: a decodable image in a format uploads refuse."""
    return make_image("GIF", mode="RGB")


def bmp_bytes() -> bytes:
    """A real BMP: a decodable image in a format uploads refuse."""
    return make_image("BMP")


def pdf_bytes() -> bytes:
    """A minimal PDF: a document sent where a photo is expected."""
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def svg_bytes() -> bytes:
    """An SVG carrying a script, the classic stored-XSS upload."""
    return b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header claims huge dimensions over a few bytes of data: a decompression bomb's shape."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def truncated_jpeg(size=(64, 64)) -> bytes:
    """A JPEG cut in half: it opens (Pillow reads headers lazily) and fails when decoded."""
    data = make_image("JPEG", size)
    return data[: len(data) // 2]


def junk_bytes() -> bytes:
    """Plain text that is no image at all."""
    return b"this is not an image at all, just some text pretending " * 8


def polyglot_png() -> bytes:
    """A valid PNG with an HTML page appended; `verify()` passes it."""
    return png_bytes() + b"<html><script>alert('polyglot')</script></html>"


def exif_rotated_jpeg(size=(40, 20), orientation: int = 6) -> bytes:
    """A landscape JPEG whose EXIF says "rotate 90 degrees", as phones write them; GPS data included."""
    image = Image.new("RGB", size, (250, 250, 250))
    for x in range(size[0]):
        for y in range(6):
            image.putpixel((x, y), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}
    output = io.BytesIO()
    image.save(output, format="JPEG", exif=exif.tobytes())
    return output.getvalue()


def mpo_jpeg(size=(32, 24)) -> bytes:
    """A multi-picture JPEG (MPO), as some phones and cameras write them."""
    output = io.BytesIO()
    first = Image.new("RGB", size, (200, 30, 30))
    first.save(output, format="MPO", save_all=True, append_images=[Image.new("RGB", size, (0, 0, 0))])
    return output.getvalue()


def upload(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> SimpleUploadedFile:
    """Wrap bytes as an uploaded file; the name and content type are the sender's claims, not checked here."""
    return SimpleUploadedFile(name, data, content_type=content_type)


_seeds = itertools.count()


def noisy_png(color: tuple[int, int, int], seed: int | None = None, size: int = 32) -> bytes:
    """A distinct (by hash) photo of roughly one colour: what a tiny model learns to tell apart.

    Each pixel is the colour plus uniform noise in [-40, 40); without a `seed` every call gives a new image.
    """
    rng = np.random.default_rng(next(_seeds) if seed is None else seed)
    pixels = np.clip(np.array(color, dtype=np.int16) + rng.integers(-40, 40, size=(size, size, 3)), 0, 255)
    output = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(output, format="PNG")
    return output.getvalue()


def labelled_png(label: str, seed: int | None = None, size: int = 32) -> bytes:
    """A noisy photo of `label`'s colour ("bad" red, "ok" blue)."""
    return noisy_png(COLORS[label], seed=seed, size=size)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Trouser is "bad", Bag is "ok": real photos with many ways to vary, so a model trained on shuffled labels has no
# single dominant axis to fall on by luck (solid-colour images would let it split on colour half the time).
FASHION_CLASSES = {PROHIBITED: 1, ALLOWED: 8}
_fashion: dict[str, np.ndarray] = {}


def fashion_png(label: str, index: int) -> bytes:
    """The index-th Fashion-MNIST test photo of the label's class, as PNG (the test is skipped without the data)."""
    if not _fashion:
        if not FASHION_MNIST.is_dir():
            pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
        with gzip.open(FASHION_MNIST / "t10k-images-idx3-ubyte.gz") as handle:
            _fashion["x"] = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz") as handle:
            _fashion["y"] = np.frombuffer(handle.read(), np.uint8, offset=8)
    rows = np.where(_fashion["y"] == FASHION_CLASSES[label])[0]
    output = io.BytesIO()
    Image.fromarray(_fashion["x"][rows[index]]).save(output, format="PNG")
    return output.getvalue()


def write_training_folder(root: Path, per_label: int = 12, fashion: bool = False) -> Path:
    """A folder-per-label training set of `per_label` photos each, as `import_training_set` reads it."""
    for label in (PROHIBITED, ALLOWED):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_label):
            data = fashion_png(label, index) if fashion else labelled_png(label)
            (root / label / f"{index}.png").write_bytes(data)
    return root


def photo(name: str = "chelsea", transform=None, size: tuple[int, int] | None = None) -> bytes:
    """A real photo from scikit-image's samples as a JPEG, optionally transformed (a PIL image -> PIL image).

    PDQ needs real pictures: solid test images are flat, and a flat image's hash has no quality.
    """
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    if size:
        image = image.resize(size)
    if transform is not None:
        image = transform(image)
    output = io.BytesIO()
    image.save(output, format="JPEG", quality=90)
    return output.getvalue()


def captioned(image):
    """A seller's caption across the lower part of the photo, as `bench/harness/photos.py` writes one: PDQ moves
    past the match distance on some photos, while the photo's centre stays close."""
    from PIL import ImageDraw, ImageFont

    out = image.copy()
    font = ImageFont.load_default(size=image.height // 10)
    ImageDraw.Draw(out).text(
        (image.width // 20, image.height - image.height // 7),
        "SALE 50% OFF - call 555 0199",
        font=font,
        fill=(255, 255, 255),
        stroke_width=1,
        stroke_fill=(0, 0, 0),
    )
    return out


def mirrored(image):
    """The photo mirrored left to right: a copy PDQ finds through its dihedral variants."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
