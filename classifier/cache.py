"""The bottleneck cache: pooled backbone features on disk, one .npy per image, keyed by content hash.

A retrain embeds only images it has never seen, which is what makes retraining on moderators' decisions cheap.
Files are written atomically (temp file + rename) so a crashed or concurrent run never leaves a half-written
vector that a later run would trust.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifier.files import atomic_file


class BottleneckCache:
    """Features of one backbone at one input size under `root/<namespace>/<sha[:2]>/<sha>.npy`.

    Pooled vectors are stored as float32; feature maps below fine-tuned layers as float16, which halves the disk
    and memory they take at a precision far below what training notices.
    """

    def __init__(self, root: str | Path, backbone: str, image_size: int, variant: str | None = None):
        # The variant separates feature spaces that share a backbone name, e.g. a different local weights file.
        namespace = f"{backbone}-{image_size}" + (f"-{variant}" if variant else "")
        self.directory = Path(root) / namespace

    def path(self, sha256: str) -> Path:
        """Where the vector of the image with this content hash is (or would be) stored."""
        return self.directory / sha256[:2] / f"{sha256}.npy"

    def get(self, sha256: str) -> np.ndarray | None:
        """The cached vector, or None when absent or unreadable (an unreadable file is simply re-embedded)."""
        path = self.path(sha256)
        try:
            vector = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if vector.ndim < 1 or not np.all(np.isfinite(vector)):
            return None
        return vector

    def put(self, sha256: str, vector: np.ndarray) -> None:
        """Store the vector for ``sha256`` (pooled vectors as float32, feature maps as float16), atomically."""
        path = self.path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        dtype = np.float32 if vector.ndim == 1 else np.float16
        with atomic_file(path, "wb", prefix=".tmp-", suffix=".npy") as handle:
            np.save(handle, np.asarray(vector, dtype=dtype), allow_pickle=False)

    def __contains__(self, sha256: str) -> bool:
        return self.path(sha256).is_file()
