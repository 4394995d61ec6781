"""Upload checks shared by the API and the staff upload form.

An uploaded file is untrusted bytes. Its type is decided by its content (never its name or the client's
content type) against an allowlist, its size and pixel count are capped before any decoding, it is decoded in
full so truncated files fail here rather than in a worker, and what gets stored is a fresh encoding of the
pixels: EXIF (GPS included) is dropped after its orientation is applied, and anything appended to the file
(a polyglot's HTML or script) is gone.
"""

import contextlib
import hashlib
import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

# Format name as Pillow reports it -> extension of the stored copy.
ALLOWED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# What decoding and re-encoding one pixel costs, relative to JPEG (measured on a 40-megapixel flat image, the
# cheapest file for the most work: JPEG 0.35 s, PNG 1.0 s, WebP 2.2 s). The pixel cap is divided by it, so no
# format lets one request hold a web worker longer than a JPEG at the cap does.
DECODE_COST = {"JPEG": 1, "PNG": 3, "WEBP": 6}

# Recognising a few common refused types by their magic bytes gives the sender a better message than "junk".
_KNOWN_REFUSED = [
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"%PDF", "PDF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%!PS", "PostScript"),
]


class ImageValidationError(Exception):
    """An upload that is refused. `code` is machine-readable; `status` is the HTTP status the API answers."""

    def __init__(self, code: str, detail: str, status: int = 400):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class ValidatedImage:
    """A checked image, re-encoded. `sha256` is of the ORIGINAL bytes so identical uploads can be recognised."""

    content: bytes
    extension: str
    format: str
    width: int
    height: int
    sha256: str
    size: int


def sniff_format(data: bytes) -> str | None:
    """The allowlisted format the bytes start with, or None. Decided by magic bytes, not by Pillow's plugins."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _refused_type_name(data: bytes) -> str | None:
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    for magic, name in _KNOWN_REFUSED:
        if data.startswith(magic):
            return name
    return None


def _read_all(uploaded_file, limit: int) -> bytes:
    """Read at most `limit + 1` bytes so an oversized upload is detected without holding all of it."""
    if isinstance(uploaded_file, bytes | bytearray):
        return bytes(uploaded_file[: limit + 1])
    if hasattr(uploaded_file, "seek"):
        uploaded_file.seek(0)
    if hasattr(uploaded_file, "chunks"):
        buffer = bytearray()
        for chunk in uploaded_file.chunks():
            buffer += chunk
            if len(buffer) > limit:
                break
        return bytes(buffer)
    return uploaded_file.read(limit + 1)


def validate_image(uploaded_file) -> ValidatedImage:
    """Check one upload and return its re-encoded copy, or raise `ImageValidationError`."""
    max_bytes = settings.VIGIA_MAX_UPLOAD_BYTES
    declared = getattr(uploaded_file, "size", None)
    if declared is not None and declared > max_bytes:
        raise ImageValidationError("too_large", f"The file is {declared} bytes; the limit is {max_bytes}.", 413)
    data = _read_all(uploaded_file, max_bytes)
    if len(data) > max_bytes:
        raise ImageValidationError("too_large", f"The file is larger than the limit of {max_bytes} bytes.", 413)
    if not data:
        raise ImageValidationError("empty", "The file is empty.")

    detected = sniff_format(data)
    if detected is None:
        refused = _refused_type_name(data)
        if refused:
            raise ImageValidationError("unsupported_type", f"{refused} files are not accepted; send JPEG, PNG or WebP.")
        raise ImageValidationError("not_an_image", "The file is not a JPEG, PNG or WebP image.")

    image = _decode(data, detected)
    content = _reencode(image, detected)
    return ValidatedImage(
        content=content,
        extension=ALLOWED_FORMATS[detected],
        format=detected,
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def _decode(data: bytes, detected: str) -> Image.Image:
    """Open with only the detected format's plugin, cap pixels from the header, then decode every pixel."""
    max_pixels = settings.VIGIA_MAX_IMAGE_PIXELS // DECODE_COST[detected]
    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x its own pixel limit; a warning here is a refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[detected])
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageValidationError("corrupt", "The image has no pixels.")
            if width * height > max_pixels:
                raise ImageValidationError(
                    "too_many_pixels",
                    f"The image is {width}x{height} pixels; the limit for {detected} is {max_pixels} pixels.",
                    413,
                )
            image.load()
        except ImageValidationError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageValidationError("too_many_pixels", f"The image has too many pixels ({error}).", 413) from error
        except UnidentifiedImageError as error:
            raise ImageValidationError("not_an_image", "The file could not be read as an image.") from error
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageValidationError("corrupt", f"The image could not be decoded: {error}.") from error
    # Cameras write multi-picture JPEGs (MPO); Pillow reports those as "MPO" and the first picture is the photo.
    if image.format != detected and not (detected == "JPEG" and image.format == "MPO"):
        raise ImageValidationError("not_an_image", "The file's content does not match its image type.")
    # Malformed EXIF must not refuse an otherwise good photo: it is then stored as decoded.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    return image


def _reencode(image: Image.Image, detected: str) -> bytes:
    """Encode the pixels afresh in the detected format; no EXIF, no text chunks, nothing appended."""
    output = io.BytesIO()
    if detected == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(output, format="JPEG", quality=90)
    elif detected == "PNG":
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
            image = image.convert("RGBA")
        image.save(output, format="PNG")
    else:
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(output, format="WEBP", quality=90)
    return output.getvalue()
