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
from classifier.selection import Candidate, choose, size_hysteresis
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
    hparams = replace(SIZED, cv_l2=())
    choice = choose(features, y, np.ones(150), np.arange(150), keys, 2, hparams, {32: IDENTITY, 64: IDENTITY})
    assert choice.image_size == informative == choice.record["chosen"]["image_size"]
    assert (choice.hparams.image_size, choice.hparams.cv_image_sizes) == (informative, (32, 64))
    scores = {entry["image_size"]: entry["score"] for entry in choice.record["candidates"]}
    assert scores[informative] < scores[96 - informative]
    # 32 px is the size given first, so moving to 64 px has to clear the fold noise; a clear win does.
    assert "size_rule" not in choice.record if informative == 32 else choice.record["size_rule"]["moved"]


IDENTITY = [Candidate("as given", np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), True)]


def _entry(size: int, fold_scores: list[float]) -> dict:
    return {"image_size": size, "fold_scores": fold_scores, "score": float(np.mean(fold_scores))}


def test_a_size_moves_only_on_a_win_larger_than_the_standard_error_of_its_paired_fold_differences():
    kept = _entry(224, [0.50, 0.40, 0.60])
    noisy = size_hysteresis(kept, _entry(128, [0.40, 0.49, 0.55]))  # lower mean, but one fold loses
    assert noisy["mean_difference"] < 0 and not noisy["moved"]
    # A smaller win that every fold agrees on is no noise: the fold-to-fold spread cancels in the pairing.
    steady = size_hysteresis(kept, _entry(128, [0.49, 0.39, 0.59]))
    assert steady["mean_difference"] > noisy["mean_difference"] and steady["moved"]


def test_a_retrain_keeps_its_size_against_a_win_within_the_fold_noise_and_a_first_training_does_not():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 150)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(150)]
    # Both sizes see the labels equally well, through different noise: 64 px wins by chance, and by little.
    features = {
        size: ((y[:, None] * 2.0 - 1.0) + 1.5 * rng.normal(size=(150, 6))).astype(np.float32) for size in (32, 64)
    }
    candidates = {32: IDENTITY, 64: IDENTITY}
    retrain = choose(features, y, np.ones(150), np.arange(150), keys, 2, replace(SIZED, cv_l2=()), candidates)
    rule = retrain.record["size_rule"]
    assert (rule["kept"], rule["challenger"]) == (32, 64)
    assert -rule["standard_error"] < rule["mean_difference"] < 0 and not rule["moved"]
    assert retrain.image_size == retrain.record["chosen"]["image_size"] == retrain.hparams.image_size == 32
    first = choose(
        features, y, np.ones(150), np.arange(150), keys, 2, replace(SIZED, image_size=None, cv_l2=()), candidates
    )
    assert first.image_size == 64 and "size_rule" not in first.record


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
