"""The content hash that names things in the classifier: training images and saved model files alike.

An image is identified by the sha256 of its bytes (so the stable split and the bottleneck cache follow the
picture, not its file name), and a registry version records the sha256 of its model file so a tampered file is
refused. Both must be the same rule, computed the same way, so it lives here once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Read in 1 MiB chunks: model files run to tens of megabytes and should not be held in memory twice.
_CHUNK = 1 << 20


def bytes_sha256(data: bytes) -> str:
    """The hex sha256 of bytes held in memory (an upload), equal to `file_sha256` of a file holding them."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
