"""Training data in the folder-per-class layout, and the stable content-hash split.

The split is decided by each image's sha256 alone, so adding images to a folder never moves an existing image
from test to train (which would leak it into training and inflate the test figure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from classifier.hashing import bytes_sha256, file_sha256

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})
SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
    """The data cannot be trained on as given (a label without images, fewer than two labels, ...)."""


@dataclass(frozen=True)
class Example:
    """One labelled image, identified by its content hash; the pixels come from `path` or from `data`.

    `weight` scales the example's loss in training and its count in metrics: a caller whose examples are a
    biased sample of the population (e.g. only what a model flagged, plus a small random audit) passes the
    inverse of each example's inclusion probability, so weighted sums estimate the population's. `group` (a hex
    key, e.g. the sha256 of a near-duplicate group's first image) keeps copies of one picture in one split.
    """

    sha256: str
    label: str
    path: Path | None = None
    data: bytes | None = None
    weight: float = 1.0
    group: str = ""

    @property
    def split_key(self) -> str:
        """What decides the split: the near-duplicate group when the caller gave one, else the image's own hash.

        Copies of one picture (re-encoded, resized, mirrored) have different bytes; splitting them by their own
        hashes would put some in test and some in train, and the test figure would measure memory.
        """
        return self.group or self.sha256

    @property
    def name(self) -> str:
        """A human-readable name for reports: the file path when there is one, else the hash."""
        return str(self.path) if self.path is not None else self.sha256

    def source(self) -> bytes | Path:
        """What `decode_image` reads: the bytes when held in memory, else the file path."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise DatasetError(f"example {self.sha256} has neither data nor path")
        return self.path

    @classmethod
    def from_bytes(cls, data: bytes, label: str) -> Example:
        """An example of an image held in memory, identified by the sha256 of its bytes."""
        return cls(sha256=bytes_sha256(data), label=label, data=data)


@dataclass
class FolderScan:
    """What `scan_folder` found: the examples, the labels (one per folder) and the files it had to skip."""

    examples: list[Example]
    labels: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _looks_like_image(path: Path) -> str | None:
    """Return why the file is not a readable image, or None.

    Only the header is parsed here (cheap); a truncated body is caught when the image is decoded for training.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"unreadable image: {error}".strip()
    return None


def scan_folder(directory: str | Path) -> FolderScan:
    """List `directory/<label>/*.(jpg|jpeg|png|webp)` as examples; unreadable files are skipped and listed.

    The same picture in two labels is contradictory, so all its copies are skipped; the same picture twice in
    one label is kept once.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"not a directory: {root}")
    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(label_dirs) < 2:
        raise DatasetError(f"need at least two label folders under {root}, found {len(label_dirs)}")
    skipped: list[tuple[str, str]] = []
    by_sha: dict[str, Example] = {}
    conflicting: set[str] = set()
    for label_dir in label_dirs:
        for path in sorted(label_dir.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((str(path), f"not an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
                continue
            reason = _looks_like_image(path)
            if reason:
                skipped.append((str(path), reason))
                continue
            try:
                sha = file_sha256(path)
            except OSError as error:
                skipped.append((str(path), f"cannot read: {error}"))
                continue
            previous = by_sha.get(sha)
            if previous is None:
                by_sha[sha] = Example(sha256=sha, label=label_dir.name, path=path)
            elif previous.label != label_dir.name:
                conflicting.add(sha)
                skipped.append((str(path), f"same image also labelled {previous.label!r}"))
            else:
                skipped.append((str(path), f"duplicate of {previous.path}"))
    for sha in conflicting:
        example = by_sha.pop(sha)
        skipped.append((str(example.path), "same image appears under another label"))
    examples = list(by_sha.values())
    labels = [d.name for d in label_dirs]
    present = {e.label for e in examples}
    empty = [label for label in labels if label not in present]
    if empty:
        raise DatasetError(f"label(s) without any usable image: {', '.join(empty)}")
    return FolderScan(examples=examples, labels=labels, skipped=skipped)


def split_of(sha256: str, test_share: float = 0.3, validation_share: float = 0.1) -> str:
    """Assign an image to "train", "validation" or "test" by its content hash (or its group's key, a hash too):
    stable as the data grows."""
    # The first 64 bits of a sha256 are uniformly distributed, so this is a fair draw from [0, 1).
    draw = int(sha256[:16], 16) / float(1 << 64)
    if draw < test_share:
        return "test"
    if draw < test_share + validation_share:
        return "validation"
    return "train"


def check_labels(examples: Iterable[Example], labels: list[str], prohibited: list[str]) -> None:
    """Raise DatasetError unless the labels, the prohibited subset and the examples agree."""
    if len(labels) < 2:
        raise DatasetError(f"need at least two labels, got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise DatasetError("labels must be unique")
    if any(not label or not label.strip() for label in labels):
        raise DatasetError("a label name is empty")
    unknown = sorted(set(prohibited) - set(labels))
    if unknown:
        raise DatasetError(f"prohibited label(s) not among the labels: {', '.join(unknown)}")
    counts = dict.fromkeys(labels, 0)
    for example in examples:
        if example.label not in counts:
            raise DatasetError(f"example {example.name} has unknown label {example.label!r}")
        counts[example.label] += 1
    empty = [label for label, count in counts.items() if count == 0]
    if empty:
        raise DatasetError(f"label(s) without any image: {', '.join(empty)}")
