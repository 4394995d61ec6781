"""One small trained result shared by the registry, scoring and CLI tests (training it once keeps them fast)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from classifier.data import scan_folder
from classifier.hparams import HParams
from classifier.registry import Registry
from classifier.training import train_model
from tests.classifier.synthetic import write_dataset

HPARAMS = HParams(backbone="tiny", image_size=32, epochs=30, learning_rate=0.05, early_stopping_patience=30)


@functools.cache
def trained_result():
    """The shared result, trained on first use (20 synthetic images per label on the tiny backbone)."""
    root = Path(tempfile.mkdtemp(prefix="vigia-test-data-"))
    scan = scan_folder(write_dataset(root / "data", per_label=20))
    return train_model(scan.examples, scan.labels, ["bad"], HPARAMS, cache_dir=root / "cache", log_dir=root / "logs")


def two_versions(root: Path) -> Registry:
    """A registry under ``root`` holding the shared result twice, as v0001 and v0002; none is active."""
    registry = Registry(root)
    registry.save(trained_result())
    registry.save(trained_result())
    return registry


def break_model(registry: Registry, version: str) -> None:
    """Cut the end off ``version``'s model file, as a disk fault or a half-copied release would."""
    model_file = registry.root / version / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:-10])
