import json

import numpy as np
import pytest

from classifier.registry import Registry, RegistryError
from tests.classifier.synthetic import random_pixels
from tests.classifier.trained import trained_result


def test_save_writes_a_complete_version(tmp_path):
    registry = Registry(tmp_path)
    version = registry.save(trained_result(), metadata={"run": 7})
    assert version == "v0001"
    path = tmp_path / version
    for name in (
        "model.keras",
        "model.sha256",
        "labels.json",
        "hparams.json",
        "metrics.json",
        "manifest.json",
        "metadata.json",
        "curves.png",
        "confusion.png",
    ):
        assert (path / name).is_file(), name
    assert list((path / "logs").rglob("events.out.tfevents*"))
    assert json.loads((path / "labels.json").read_text()) == {"labels": ["bad", "ok"], "prohibited": ["bad"]}
    assert json.loads((path / "metadata.json").read_text())["run"] == 7
    assert "history" in json.loads((path / "metrics.json").read_text())
    [info] = registry.versions()
    assert info.version == version and info.prohibited == ["bad"] and info.metrics["n"] > 0
    assert registry.active_version() is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_load_gives_the_same_predictions(tmp_path):
    registry = Registry(tmp_path)
    result = trained_result()
    loaded = registry.load(registry.save(result))
    assert loaded.image_size == 32 and loaded.labels == ["bad", "ok"]
    x = random_pixels(3, 32, seed=1)
    np.testing.assert_allclose(loaded.model(x, training=False), result.model(x, training=False), atol=1e-5)


def test_activate_and_rollback(tmp_path):
    registry = Registry(tmp_path)
    first, second, third = (registry.save(trained_result()) for _ in range(3))
    assert (first, second, third) == ("v0001", "v0002", "v0003")
    registry.activate(first)
    registry.activate(second)
    registry.activate(third)
    assert registry.active_version() == third
    assert registry.rollback() == second
    assert registry.active_version() == second
    assert registry.rollback() == first
    with pytest.raises(RegistryError):
        registry.rollback()
    assert registry.active_version() == first
    with pytest.raises(RegistryError):
        registry.activate("v0042")
    with pytest.raises(RegistryError):
        registry.activate("../etc")


def test_tampered_model_file_is_refused(tmp_path):
    registry = Registry(tmp_path)
    version = registry.save(trained_result())
    model_file = tmp_path / version / "model.keras"
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="sha256"):
        registry.load(version)


def test_model_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    from classifier.hashing import file_sha256

    registry = Registry(tmp_path)
    version = registry.save(trained_result())
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    evil = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    model_file = tmp_path / version / "model.keras"
    evil.save(model_file)
    (tmp_path / version / "model.sha256").write_text(file_sha256(model_file))
    with pytest.raises(RegistryError, match="Lambda"):
        registry.load(version)


def test_no_active_version(tmp_path):
    with pytest.raises(RegistryError, match="no active"):
        Registry(tmp_path).load()


def test_readers_give_a_version_s_hyper_parameters_manifest_and_metadata(tmp_path):
    registry = Registry(tmp_path)
    result = trained_result()
    version = registry.save(result, metadata={"run": 7})
    assert registry.hparams(version) == result.hparams
    assert registry.manifest(version) == result.manifest
    metadata = registry.metadata(version)
    assert metadata["run"] == 7 and metadata["feature_cache"] == result.feature_cache
    assert registry.info(version) == registry.versions()[0]


def test_readers_of_missing_or_broken_files(tmp_path):
    registry = Registry(tmp_path)
    version = registry.save(trained_result())
    (tmp_path / version / "manifest.json").unlink()
    (tmp_path / version / "metadata.json").unlink()
    # What callers expect of a version saved before these files existed: nothing recorded.
    assert registry.manifest(version) == {} and registry.metadata(version) == {}
    # Without metadata a model still loads; it is only not scored on cached features.
    assert registry.load(version).feature_cache is None
    with pytest.raises(RegistryError, match="metadata.json"):
        registry.info(version)
    (tmp_path / version / "hparams.json").write_text('{"no_such_option": 1}')
    with pytest.raises(RegistryError, match="no_such_option"):
        registry.hparams(version)
    (tmp_path / version / "hparams.json").unlink()
    with pytest.raises(RegistryError, match="hparams.json"):
        registry.hparams(version)
    (tmp_path / version / "labels.json").write_text("{not json")
    with pytest.raises(RegistryError, match="labels.json"):
        registry.load(version)
    with pytest.raises(RegistryError):
        registry.manifest("../elsewhere")
