"""Photos of everything else: what a marketplace's sellers upload besides the few things that are prohibited.

A classifier that has only seen a prohibited class and one look-alike calls anything unfamiliar one of the two
(a solid blue rectangle scored 1.000 for Pullover). Its "allowed" side must be a mixture, and it must include
photos unlike any product: blanks, noise, real photographs of other subjects. Offline, the real ones come from
packages this project installs anyway or can install:

- scikit-image's sample images (in its wheel: a cat, coffee, an astronaut, a rocket, coins, textures, text...);
- the ImageNet, CIFAR-10, CIFAR-100 and MNIST samples inside the PyPI ``foolbox`` wheel (its ``data/`` folder,
  found without importing foolbox; its Fashion-MNIST samples are left out, being the product dataset itself);
- Debian ``darknet``'s ``data/`` images (a dog, an eagle, a giraffe, horses, a person, a kite, The Scream).

Sources that are not installed are skipped, never downloaded at run time. Synthetic images (solid colours,
splits, gradients, stripes, uniform and Gaussian noise) are generated from a seed, so any number of them is
reproducible. Every photo has a stable ``key``: splitting on it keeps a photo on one side of a train/test split.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DARKNET_DIR = Path("/usr/share/darknet/data")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Sample files that are not pictures of anything (a calibration chart scan, a binary shape) still count: a
# marketplace gets screenshots and scans too. Multi-page and motion files are left out: not single photos.
_SKIMAGE_SKIP = ("motorcycle_disp", "lbpcascade", "multipage", "lfw_subset", "no_time_for_that")
_FOOLBOX_PREFIXES = ("imagenet_", "cifar10_", "cifar100_", "mnist_")
SYNTHETIC_KINDS = ("solid", "split", "gradient", "stripes", "uniform_noise", "gaussian_noise")


@dataclass(frozen=True)
class OtherPhoto:
    """One photo of something else: where it comes from, a name, and how to read it."""

    source: str
    name: str
    path: Path | None = None
    # Synthetic photos are made on demand from their kind and seed instead of read from a file.
    synthetic: tuple[str, int] | None = None

    @property
    def key(self) -> str:
        """A stable identity (`source/name`): the same photo always lands on the same side of a split."""
        return f"{self.source}/{self.name}"

    def image(self) -> Image.Image:
        """The photo as an RGB image."""
        if self.synthetic is not None:
            return synthetic_image(*self.synthetic)
        with Image.open(self.path) as opened:
            opened.seek(0)
            return _rgb(opened)

    def content(self, image_format: str = "JPEG") -> bytes:
        """The photo encoded as a marketplace would send it (JPEG by default)."""
        buffer = io.BytesIO()
        self.image().save(buffer, format=image_format, quality=90)
        return buffer.getvalue()


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        ground = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(ground, image).convert("RGB")
    if image.mode in ("I;16", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        span = float(pixels.max() - pixels.min()) or 1.0
        image = Image.fromarray(((pixels - pixels.min()) * 255.0 / span).astype(np.uint8))
    return image.convert("RGB")


def scikit_image_photos() -> list[OtherPhoto]:
    """The sample images in scikit-image's wheel, by name; none when scikit-image is not installed."""
    directory = _package_dir("skimage", "data")
    if directory is None:
        return []
    return [
        OtherPhoto("scikit-image", path.stem, path)
        for path in _image_files(directory)
        if not path.stem.startswith(_SKIMAGE_SKIP)
    ]


def foolbox_photos() -> list[OtherPhoto]:
    """The ImageNet, CIFAR and MNIST samples in the foolbox wheel's ``data/``; none when it is not installed."""
    directory = _package_dir("foolbox", "data")
    if directory is None:
        return []
    return [
        OtherPhoto("foolbox", path.stem, path)
        for path in _image_files(directory)
        if path.name.startswith(_FOOLBOX_PREFIXES)
    ]


def darknet_photos(directory: str | Path = DARKNET_DIR) -> list[OtherPhoto]:
    """Debian darknet's sample photos; none when the package is not installed."""
    directory = Path(directory)
    return [OtherPhoto("darknet", path.stem, path) for path in _image_files(directory)] if directory.is_dir() else []


def real_photos() -> list[OtherPhoto]:
    """Every installed real photo of something else, in a stable order (source, then name)."""
    return [*scikit_image_photos(), *foolbox_photos(), *darknet_photos()]


def synthetic_photos(count: int, seed: int = 0, kinds: Sequence[str] = SYNTHETIC_KINDS) -> list[OtherPhoto]:
    """``count`` synthetic images cycling through ``kinds``, each reproducible from its own seed."""
    unknown = set(kinds) - set(SYNTHETIC_KINDS)
    if unknown:
        raise ValueError(f"unknown synthetic kinds {sorted(unknown)}; choose from {', '.join(SYNTHETIC_KINDS)}")
    if count < 0:
        raise ValueError("count must not be negative")
    return [
        OtherPhoto(
            "synthetic", f"{kinds[i % len(kinds)]}-{seed}-{i}", synthetic=(kinds[i % len(kinds)], seed * 100_003 + i)
        )
        for i in range(count)
    ]


def synthetic_image(kind: str, seed: int, size: int | None = None) -> Image.Image:
    """A synthetic RGB image of ``kind`` drawn from ``seed``: the same arguments always give the same pixels."""
    rng = np.random.default_rng(seed)
    side = size or int(rng.integers(64, 320))
    colours = rng.integers(0, 256, size=(2, 3))
    if kind == "solid":
        pixels = np.broadcast_to(colours[0], (side, side, 3))
    elif kind == "split":
        pixels = np.empty((side, side, 3), dtype=np.int64)
        cut = int(rng.integers(side // 4, 3 * side // 4))
        pixels[:, :cut], pixels[:, cut:] = colours[0], colours[1]
        if rng.random() < 0.5:
            pixels = pixels.transpose(1, 0, 2)
    elif kind == "gradient":
        ramp = np.linspace(0.0, 1.0, side)[:, None, None]
        pixels = colours[0] * (1 - ramp) + colours[1] * ramp
        pixels = np.broadcast_to(pixels, (side, side, 3))
        if rng.random() < 0.5:
            pixels = pixels.transpose(1, 0, 2)
    elif kind == "stripes":
        width = int(rng.integers(2, max(3, side // 6)))
        band = (np.arange(side) // width) % 2
        pixels = np.where(band[:, None, None] == 0, colours[0], colours[1])
        pixels = np.broadcast_to(pixels, (side, side, 3))
        if rng.random() < 0.5:
            pixels = pixels.transpose(1, 0, 2)
    elif kind == "uniform_noise":
        pixels = rng.integers(0, 256, size=(side, side, 3))
    elif kind == "gaussian_noise":
        pixels = rng.normal(colours[0], float(rng.uniform(10, 80)), size=(side, side, 3))
    else:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {', '.join(SYNTHETIC_KINDS)}")
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def other_photos(synthetic: int = 0, seed: int = 0) -> list[OtherPhoto]:
    """The installed real photos followed by ``synthetic`` generated ones."""
    return [*real_photos(), *synthetic_photos(synthetic, seed)]


def in_test_split(photo: OtherPhoto, test_share: float) -> bool:
    """Whether the photo belongs to the test side of a split holding ``test_share`` of them, by its key's hash."""
    digest = hashlib.sha256(photo.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_share


def export_other_photos(out_dir: str | Path, photos: Iterable[OtherPhoto], size: int | None = None) -> int:
    """Write each photo as ``out_dir/<source>-<name>.png``, resized to ``size`` x ``size`` when given; returns
    how many.

    PNG keeps the files byte-identical across runs, so their content hashes (training's split and feature
    cache) stay put.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for photo in photos:
        image = photo.image()
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        image.save(out / f"{photo.source}-{photo.name}.png", optimize=False)
        written += 1
    return written


def available_sources() -> dict[str, int]:
    """How many real photos each source provides here (0 when it is not installed)."""
    return {
        "scikit-image": len(scikit_image_photos()),
        "foolbox": len(foolbox_photos()),
        "darknet": len(darknet_photos()),
    }


def _package_dir(package: str, folder: str) -> Path | None:
    """A data folder inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations))) / folder
    return directory if directory.is_dir() else None


def _image_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
