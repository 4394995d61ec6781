"""A versioned model registry on disk with an atomically switched `active` pointer.

Layout: `root/v0001/` holds model.keras, model.sha256, the LiteRT files model.tflite and features.tflite (each
with its `.sha256`, present only when they passed their equivalence check), labels.json, hparams.json,
metrics.json, manifest.json, metadata.json, curves.png, confusion.png and logs/ (TensorBoard). `root/active` names
the serving version and is replaced with write + rename, so a reader sees the old or the new name, never half of
one. Models are programs: loading checks the sha256 recorded at save time, refuses Lambda layers and uses Keras
safe_mode; a LiteRT file is handed out only when its bytes match their recorded sha256.

The layout is this module's business: other code reads a version through `Registry`'s readers (`info`,
`hparams`, `manifest`, `metadata`, `litert`, `litert_content`, `load`), never by opening its files, so the files
can change in one place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.files import atomic_file
from classifier.hashing import bytes_sha256, file_sha256
from classifier.hparams import HParams
from classifier.model import has_lambda_layer, shape_problem

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
HPARAMS_FILE = "hparams.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
METADATA_FILE = "metadata.json"
#: The LiteRT file of each part (`classifier.conversion`): the whole scoring model and the bottleneck extractor.
LITERT_FILES = {"scoring": "model.tflite", "features": "features.tflite"}

_REQUIRED = object()  # marks a JSON file a version cannot do without (`Registry._read_json`)


class RegistryError(RuntimeError):
    """A version is missing, tampered with, unsafe or unloadable."""


@dataclass(frozen=True)
class VersionInfo:
    """A saved version's name, creation time, labels and test metrics (without the per-epoch history)."""

    version: str
    created_at: str
    labels: list[str]
    prohibited: list[str]
    metrics: dict
    path: Path


@dataclass(frozen=True)
class LoadedModel:
    """A version's model, checked and loaded, with what scoring needs to feed it and read its output."""

    version: str
    model: Any
    labels: list[str]
    prohibited: list[str]
    image_size: int
    # Where this model's backbone features are cached (see TrainingResult.feature_cache); None when unknown.
    feature_cache: dict | None = None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    with atomic_file(path, "w", durable=True) as handle:
        handle.write(text)


def _check_recorded_sha256(path: Path, actual: str, recorded: Path) -> None:
    """Raise unless ``actual`` (the sha256 of ``path``'s bytes) is the one written to ``recorded`` at save time."""
    try:
        expected = recorded.read_text().strip()
    except OSError as error:
        raise RegistryError(f"{path} has no recorded sha256; refusing to load it") from error
    if actual != expected:
        raise RegistryError(f"{path} does not match its recorded sha256; refusing to load it")


def _refuse_lambda(model_path: Path) -> None:
    """Refuse a .keras archive whose config contains a Lambda layer, before Keras deserialises anything."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as error:
        raise RegistryError(f"{model_path} is not a valid .keras archive: {error}") from error
    if has_lambda_layer(config):
        raise RegistryError(f"{model_path} contains a Lambda layer; refusing to load arbitrary code")


class Registry:
    """Trained model versions under one directory; safe for several processes (a lock file serialises writes)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def active_file(self) -> Path:
        """The pointer file naming the serving version (its stat tells a watcher the pointer moved)."""
        return self.root / "active"

    @property
    def history_file(self) -> Path:
        """The versions activated so far, oldest first, which `rollback` walks back."""
        return self.root / "active_history.json"

    @contextlib.contextmanager
    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _version_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name)]
        return sorted(names, key=lambda name: int(VERSION_PATTERN.match(name).group(1)))

    def path(self, version: str) -> Path:
        """The directory of ``version``; RegistryError for anything that is not a version name (no ``../``)."""
        if not VERSION_PATTERN.match(version or ""):
            raise RegistryError(f"not a version name: {version!r}")
        return self.root / version

    def save(self, result, metadata: dict | None = None) -> str:
        """Write a training result as the next version and return its name; the active pointer is not moved.

        Everything is written into a temporary directory first and renamed into place, so a crash never leaves
        a half-written version that `versions()` would list.
        """
        from classifier.plots import plot_result

        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            model_path = staging / MODEL_FILE
            result.model.save(model_path)
            (staging / "model.sha256").write_text(file_sha256(model_path) + "\n")
            litert = self._write_litert(staging, result)
            _write_json(staging / LABELS_FILE, {"labels": list(result.labels), "prohibited": list(result.prohibited)})
            _write_json(staging / HPARAMS_FILE, result.hparams.to_dict())
            _write_json(staging / METRICS_FILE, {**result.metrics, "history": result.history})
            _write_json(staging / MANIFEST_FILE, result.manifest)
            created_at = datetime.now(UTC).isoformat()
            _write_json(
                staging / METADATA_FILE,
                {
                    **(metadata or {}),
                    "created_at": created_at,
                    "image_size": result.image_size,
                    "backbone": result.hparams.backbone,
                    "embedded": result.embedded,
                    "cached": result.cached,
                    "seconds": round(result.seconds, 3),
                    "skipped": [list(item) for item in result.skipped],
                    "fine_tuned_layers": list(getattr(result, "fine_tuned_layers", [])),
                    "feature_cache": getattr(result, "feature_cache", None),
                    "embedding_runtime": getattr(result, "embedding_runtime", "keras"),
                    "litert": litert,
                    "allowed_label": getattr(result, "allowed_label", None),
                    "chosen_by_cv": getattr(result, "chosen_by_cv", None),
                },
            )
            plot_result(result, staging / "curves.png", staging / "confusion.png")
            log_dir = getattr(result, "log_dir", None)
            if log_dir and Path(log_dir).is_dir():
                shutil.copytree(log_dir, staging / "logs")
                if getattr(result, "log_dir_is_temporary", False):
                    shutil.rmtree(log_dir, ignore_errors=True)
            else:
                (staging / "logs").mkdir()
            with self._lock():
                names = self._version_names()
                number = int(VERSION_PATTERN.match(names[-1]).group(1)) + 1 if names else 1
                version = f"v{number:04d}"
                os.rename(staging, self.root / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    def _write_litert(self, staging: Path, result) -> dict:
        """Convert and check the result's LiteRT files into ``staging``; the record of each part for metadata.json.

        An earlier version's extractor of the same frozen backbone is reused if it passes, so a retrain converts
        only the model whose head changed.
        """
        from classifier.conversion import convert_version, write_passing

        feature_cache = getattr(result, "feature_cache", None)
        converted = convert_version(
            result.model,
            result.image_size or result.hparams.resolved_image_size(),
            getattr(result, "check_images", None),
            features=feature_cache is not None,
            features_content=self._features_of_variant(feature_cache),
        )
        return write_passing(staging, converted, LITERT_FILES)

    def _features_of_variant(self, feature_cache: dict | None) -> bytes | None:
        """The checked extractor file of the newest version whose backbone filled the same cache variant."""
        for name in reversed(self._version_names() if feature_cache else []):
            with contextlib.suppress(RegistryError):
                same = self.metadata(name).get("feature_cache") == feature_cache
                if same and (content := self.litert_content(name, "features")) is not None:
                    return content
        return None

    def _read_json(self, version: str, name: str, missing: Any = _REQUIRED) -> Any:
        """The parsed file ``name`` of ``version``; ``missing`` when it does not exist, unless it is required."""
        path = self.path(version) / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as error:
            if missing is _REQUIRED:
                raise RegistryError(f"version {version} is incomplete: it has no {name}") from error
            return missing
        except (OSError, json.JSONDecodeError) as error:
            raise RegistryError(f"version {version} has an unreadable {name}: {error}") from error

    def info(self, version: str) -> VersionInfo:
        """What `versions` lists about one version; RegistryError when it is missing or incomplete."""
        labels = self._read_json(version, LABELS_FILE)
        metrics = self._read_json(version, METRICS_FILE)
        metadata = self._read_json(version, METADATA_FILE)
        metrics.pop("history", None)
        return VersionInfo(
            version=version,
            created_at=metadata.get("created_at", ""),
            labels=labels["labels"],
            prohibited=labels["prohibited"],
            metrics=metrics,
            path=self.path(version),
        )

    def hparams(self, version: str) -> HParams:
        """The hyper-parameters ``version`` was trained with, e.g. to retrain the active model's way.

        Raises RegistryError when the version has no readable hparams.json, or one that names hyper-parameters
        this code does not know (written by a newer version of it); a caller with a fallback catches that.
        """
        data = self._read_json(version, HPARAMS_FILE)
        try:
            return HParams.from_dict(data)
        except (TypeError, ValueError) as error:
            raise RegistryError(f"version {version} has invalid hyper-parameters: {error}") from error

    def manifest(self, version: str) -> dict[str, list[str]]:
        """Which images ``version`` used for what: ``{"train"|"validation"|"test": [sha256, ...]}``.

        An empty dict when the version has no manifest (so every split reads as empty); RegistryError when the
        file exists but cannot be read.
        """
        return self._read_json(version, MANIFEST_FILE, missing={})

    def metadata(self, version: str) -> dict:
        """What was recorded about ``version`` when it was saved.

        The metadata passed to `save`, plus ``created_at``, ``image_size``, ``backbone``, ``embedded``, ``cached``,
        ``seconds``, ``skipped``, ``fine_tuned_layers``, ``feature_cache``, ``embedding_runtime``, ``litert``,
        ``allowed_label`` (the label meaning "nothing prohibited", None when the labels leave it open) and
        ``chosen_by_cv`` (what cross-validation chose, `classifier.selection`; None when nothing was chosen).
        Empty without metadata.json; RegistryError when the file cannot be read or does not hold a JSON object.
        """
        metadata = self._read_json(version, METADATA_FILE, missing={})
        if not isinstance(metadata, dict):
            raise RegistryError(f"version {version} has an unreadable {METADATA_FILE}: not a JSON object")
        return metadata

    def litert(self, version: str) -> dict:
        """Per LiteRT part (``"scoring"``, ``"features"``) of ``version``: ``ok``, the check's figures or ``reason``.

        Empty for versions saved before LiteRT files existed (`classifier.conversion` says what a record holds).
        """
        record = self.metadata(version).get("litert")
        return record if isinstance(record, dict) else {}

    def litert_content(self, version: str, part: str) -> bytes | None:
        """The bytes of ``version``'s LiteRT file for ``part``, or None when it has none.

        RegistryError when the file's bytes do not match their recorded sha256 (or none is recorded): a caller
        then serves with Keras rather than run a file nobody checked.
        """
        name = LITERT_FILES[part]
        path = self.path(version) / name
        if not path.is_file():
            return None
        content = path.read_bytes()
        _check_recorded_sha256(path, bytes_sha256(content), path.parent / f"{name}.sha256")
        return content

    def versions(self) -> list[VersionInfo]:
        """Every complete version, oldest first; incomplete ones are left out."""
        infos = []
        for name in self._version_names():
            with contextlib.suppress(RegistryError):
                infos.append(self.info(name))
        return infos

    def active_version(self) -> str | None:
        """The name of the serving version, or None before anything was activated."""
        try:
            name = self.active_file.read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def _history(self) -> list[str]:
        try:
            return list(json.loads(self.history_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def _check_complete(self, version: str) -> None:
        path = self.path(version)
        if not (path / MODEL_FILE).is_file() or not (path / "model.sha256").is_file():
            raise RegistryError(f"no such version: {version}")

    def activate(self, version: str) -> None:
        """Point `active` at `version` (write + rename) and remember the switch for rollback."""
        self._check_complete(version)
        with self._lock():
            history = self._history()
            if not history or history[-1] != version:
                history.append(version)
            _atomic_write(self.history_file, json.dumps(history))
            _atomic_write(self.active_file, version + "\n")

    def rollback(self) -> str:
        """Re-activate the version that was active before the current one and return its name."""
        with self._lock():
            history = self._history()
            current = self.active_version()
            if current and history and history[-1] == current:
                history.pop()
            while history and not (self.path(history[-1]) / MODEL_FILE).is_file():
                history.pop()
            if not history:
                raise RegistryError("no earlier version to roll back to")
            previous = history[-1]
            _atomic_write(self.history_file, json.dumps(history))
            _atomic_write(self.active_file, previous + "\n")
        return previous

    def verify(self, version: str) -> None:
        """Raise RegistryError unless ``version`` is complete and its model file matches its recorded sha256."""
        self._check_complete(version)
        model_path = self.path(version) / MODEL_FILE
        _check_recorded_sha256(model_path, file_sha256(model_path), model_path.parent / "model.sha256")

    def load(self, version: str | None = None) -> LoadedModel:
        """Load a version (default: the active one) after checking its sha256; Lambda layers are refused."""
        version = version or self.active_version()
        if version is None:
            raise RegistryError("no active model version")
        self.verify(version)
        model_path = self.path(version) / MODEL_FILE
        _refuse_lambda(model_path)
        labels = self._read_json(version, LABELS_FILE)
        import keras

        try:
            model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
        except Exception as error:
            raise RegistryError(
                f"cannot load {model_path}: {str(error).splitlines()[0] if str(error) else error!r}"
            ) from error
        if problem := shape_problem(model.input_shape, model.output_shape[-1], len(labels["labels"])):
            raise RegistryError(f"{model_path} {problem}")
        try:
            feature_cache = self.metadata(version).get("feature_cache")
        except RegistryError:
            # Without a readable record the model is still fine: it is scored on pixels instead of cached features.
            feature_cache = None
        return LoadedModel(
            version=version,
            model=model,
            labels=list(labels["labels"]),
            prohibited=list(labels["prohibited"]),
            image_size=int(model.input_shape[1]),
            feature_cache=feature_cache if isinstance(feature_cache, dict) else None,
        )
