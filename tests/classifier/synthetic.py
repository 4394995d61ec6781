"""Small synthetic image sets for fast classifier tests: two colour-coded classes of 32 px noisy images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
CHANNEL = {"ok": 0, "bad": 2, "other": 1}


def image_bytes(label: str, seed: int, fmt: str = "PNG") -> bytes:
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
