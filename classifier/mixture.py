"""A training or demo set whose allowed side is everything else a marketplace gets, not one look-alike class.

`export_mixture` writes ``out/<prohibited>/`` with Fashion-MNIST photos of the prohibited class, and
``out/<allowed label>/`` with photos of every other Fashion-MNIST class, the installed real photos of other
subjects on the same side of their split (`classifier.other_photos.in_test_split`) and synthetic blanks and
noise: one allowed label for all of them, which is how a moderator's "not prohibited" reads too. `make run`'s
first training set and its demo listings come from here (``python -m classifier export-mixture``).
"""

from __future__ import annotations

from pathlib import Path

from classifier.datasets import FASHION_MNIST_CLASSES, FOLDER_NAMES, class_index, export_fashion_mnist
from classifier.other_photos import export_other_photos, in_test_split, real_photos, synthetic_photos

#: The one label of the allowed side.
ALLOWED_LABEL = "Allowed"

#: Seeds of the synthetic photos per split, apart from the ones training adds (`classifier.negatives`).
SYNTHETIC_SEEDS = {"train": 11, "test": 12}


def export_mixture(
    out_dir: str | Path,
    prohibited: str,
    *,
    split: str,
    per_class: int,
    allowed_per_class: int | None = None,
    synthetic: int | None = None,
    allowed_label: str = ALLOWED_LABEL,
    test_share: float = 0.3,
    directory: str | Path | None = None,
) -> dict[str, dict[str, int]]:
    """Write the prohibited class and the allowed mixture under ``out_dir``; the counts per label and kind.

    ``per_class`` photos of the prohibited class; ``allowed_per_class`` (default a third of ``per_class``) of
    each other class; every real photo of other subjects on this ``split``'s side of a ``test_share`` split; and
    ``synthetic`` generated ones (default: as many as one class gets). The same arguments write the same files.
    """
    if split not in SYNTHETIC_SEEDS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prohibited_folder = FOLDER_NAMES[class_index(prohibited)]
    if allowed_label == prohibited_folder:
        raise ValueError("the allowed label must differ from the prohibited one")
    allowed_per_class = max(1, per_class // 3) if allowed_per_class is None else allowed_per_class
    synthetic = allowed_per_class if synthetic is None else synthetic
    out = Path(out_dir)
    counts = {prohibited_folder: export_fashion_mnist(out, [prohibited], split, per_class, directory=directory)}
    others = [name for name in FASHION_MNIST_CLASSES if FOLDER_NAMES[class_index(name)] != prohibited_folder]
    allowed = (
        export_fashion_mnist(out, others, split, allowed_per_class, directory=directory, folder=allowed_label)
        if allowed_per_class
        else {}
    )
    photos = [photo for photo in real_photos() if in_test_split(photo, test_share) == (split == "test")]
    allowed["real photos"] = export_other_photos(out / allowed_label, photos)
    allowed["synthetic"] = export_other_photos(out / allowed_label, synthetic_photos(synthetic, SYNTHETIC_SEEDS[split]))
    counts[allowed_label] = allowed
    return counts
