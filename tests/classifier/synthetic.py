"""Small synthetic data for fast classifier tests: colour-coded noisy images, random pixel batches, IDX files."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
CHANNEL = {"ok": 0, "bad": 2, "other": 1}


def image_bytes(label: str, seed: int, fmt: str = "PNG") -> bytes:
    """An encoded 32 px noisy image whose colour channel says its label ("ok", "bad" or the in-between "other")."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 110, (SIZE, SIZE, 3), dtype=np.uint8)
    pixels[..., CHANNEL[label]] += 140
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_dataset(root: Path, per_label: int = 30, labels=("bad", "ok"), start: int = 0) -> Path:
    """Write root/<label>/<i>.png; seeds differ per label and index so every file is a distinct picture."""
    for offset, label in enumerate(labels):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_label):
            (folder / f"{i}.png").write_bytes(image_bytes(label, seed=offset * 100_000 + i))
    return root


def random_pixels(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` images of uniform noise in 0..255, as the float32 batch a backbone takes."""
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """Write ``array`` as a gzipped IDX file (Fashion-MNIST's format): magic, sizes, then the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())
