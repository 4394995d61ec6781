"""Writing a file so that no reader ever sees half of it: write a temporary file beside it, then rename.

Several processes share the registry, the bottleneck cache and the converted backbones (web, scoring and
training workers). A rename within one directory is atomic, so a reader opening the path finds the old file or
the new one, never a partial write, and a writer that crashes leaves at most a temporary file that nothing
reads (its name starts with a dot and does not match what readers look for).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(path: Path, *, prefix: str | None = None, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to, renamed onto ``path`` when the block ends without an error.

    For writers that want a file name rather than a handle (Keras' ``model.save``). The temporary file is
    named ``prefix`` (default ``.<name>.``) + random + ``suffix``, and is removed if the block fails.
    """
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix
    )
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        # After a successful rename there is nothing left to remove.
        Path(temporary).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(
    path: Path, mode: str = "w", *, durable: bool = False, prefix: str | None = None, suffix: str = ""
) -> Iterator[IO]:
    """A handle whose content replaces ``path`` in one rename when the block ends without an error.

    With ``durable`` the content is flushed to disk before the rename, so after a power loss the path names a
    complete file; that costs an fsync, worth it for small pointer files, not for thousands of cache entries.
    """
    with atomic_path(path, prefix=prefix, suffix=suffix) as temporary, open(temporary, mode) as handle:
        yield handle
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
