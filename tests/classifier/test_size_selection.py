"""The input size as a cross-validated choice: which sizes are candidates, the choice, and the model built at it."""

import hashlib
import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from classifier import conversion
from classifier.data import scan_folder
from classifier.hparams import HParams
from classifier.registry import Registry
from classifier.scoring import Scorer
from classifier.selection import Candidate, choose
from classifier.training import train_model

#: The tiny backbone at its native 32 px, with 64 px as the other candidate.
SIZED = HParams(
    backbone="tiny", image_size=32, cv_image_sizes=(32, 64), cv_folds=3, epochs=20, learning_rate=0.05, seed=1
)


def test_which_sizes_are_candidates():
    assert HParams().image_size_candidates() == [224, 128]  # the native size first: a tie keeps it
    assert HParams(image_size=128).image_size_candidates() == [128]  # a size given alone is fixed
    assert HParams(image_size=128, cv_image_sizes=(224, 128)).image_size_candidates() == [128, 224]
    assert HParams(cv_image_sizes=()).image_size_candidates() == [224]
    assert HParams(cv_folds=0).image_size_candidates() == [224]
    # Features that do not come from the cache cannot be compared at several sizes.
    assert HParams(distort=True).image_size_candidates() == [224]
    assert HParams(fine_tune_layers=2).image_size_candidates() == [224]
    assert HParams(backbone="tiny").image_size_candidates() == [32]
    recorded = HParams.from_dict(replace(HParams(), image_size=128, cv_image_sizes=(224, 128)).to_dict())
    assert recorded.cv_image_sizes == (224, 128) and recorded.image_size_candidates() == [128, 224]
    with pytest.raises(ValueError, match="cv_image_sizes"):
        HParams(cv_image_sizes=(224, 8))


@pytest.mark.parametrize("informative", [32, 64])
def test_the_size_whose_features_separate_the_labels_on_the_training_folds_wins(informative):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 150)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(150)]
    signal = (y[:, None] * 2.0 - 1.0) + 0.5 * rng.normal(size=(150, 6))
    noise = rng.normal(size=(150, 6))
    features = {size: (signal if size == informative else noise).astype(np.float32) for size in (32, 64)}
    identity = [Candidate("as given", np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), True)]
    hparams = replace(SIZED, cv_l2=())
    choice = choose(features, y, np.ones(150), np.arange(150), keys, 2, hparams, {32: identity, 64: identity})
    assert choice.image_size == informative == choice.record["chosen"]["image_size"]
    assert (choice.hparams.image_size, choice.hparams.cv_image_sizes) == (informative, (32, 64))
    scores = {entry["image_size"]: entry["score"] for entry in choice.record["candidates"]}
    assert scores[informative] < scores[96 - informative]


def _checker_photo(label: str, seed: int) -> bytes:
    """64 px: "bad" is a one-pixel checkerboard, "ok" flat grey of the same mean; both under the same noise.

    Shrunk to 32 px the checkerboard averages out to the grey, so only the 64 px input can tell them apart.
    """
    rng = np.random.default_rng(seed)
    pixels = np.full((64, 64), 128.0)
    if label == "bad":
        pixels += np.where(np.indices((64, 64)).sum(axis=0) % 2 == 0, 60.0, -60.0)
    pixels = np.clip(pixels + rng.normal(0, 12, (64, 64)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_model_is_built_cached_and_served_at_the_size_the_training_folds_chose(tmp_path):
    for offset, label in enumerate(("bad", "ok")):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(24):
            (tmp_path / "data" / label / f"{i}.png").write_bytes(_checker_photo(label, 1000 * offset + i))
    scan = scan_folder(tmp_path / "data")
    result = train_model(scan.examples, scan.labels, ["bad"], SIZED, cache_dir=tmp_path / "cache")
    record = result.chosen_by_cv
    assert record["chosen"]["image_size"] == 64  # over the first candidate, 32 px, where the labels look alike
    assert result.image_size == 64 and result.model.input_shape[1:] == (64, 64, 3)
    assert (result.hparams.image_size, result.hparams.cv_image_sizes) == (64, (32, 64))
    assert result.feature_cache["image_size"] == 64

    # 32 px embedded only the cross-validation images, without mirror copies; 64 px every image and mirror.
    namespaces = {path.name: len(list(path.rglob("*.npy"))) for path in (tmp_path / "cache").iterdir()}
    at_32 = {name: count for name, count in namespaces.items() if name.startswith("tiny-32-")}
    assert list(at_32.values()) == [record["images"]] and not any(name.endswith("-mirror") for name in at_32)
    assert any(name.startswith("tiny-64-") and name.endswith("-mirror") for name in namespaces)

    registry = Registry(tmp_path / "models")
    version = registry.save(result)
    registry.activate(version)
    assert registry.hparams(version).image_size == 64 and registry.load(version).image_size == 64
    assert registry.litert(version)["scoring"]["ok"] and registry.litert(version)["features"]["ok"]
    photos = [_checker_photo(label, 5000 + i) for i, label in enumerate(("bad", "ok", "bad", "ok"))]
    litert, keras = Scorer(registry.root, threads=1), Scorer(registry.root, runtime="keras")
    by_litert, by_keras = litert.predict(photos), keras.predict(photos)
    assert (litert.status()["runtime"], keras.status()["runtime"]) == ("litert", "keras")
    for a, b in zip(by_litert.probabilities, by_keras.probabilities, strict=True):
        assert a == pytest.approx(b, abs=conversion.TOLERANCE)
    assert [max(p, key=p.get) for p in by_keras.probabilities] == ["bad", "ok", "bad", "ok"]
