"""LiteRT files: converted and checked on save, served when present and intact, Keras otherwise."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from classifier import conversion
from classifier.litert import LiteRTModel
from classifier.registry import Registry
from classifier.scoring import Scorer
from classifier.serving import load_feature_extractor, load_served
from tests.classifier.synthetic import image_bytes, random_pixels
from tests.classifier.trained import HPARAMS, trained_result

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def saved(tmp_path) -> tuple[Registry, str]:
    registry = Registry(tmp_path / "models")
    version = registry.save(trained_result())
    registry.activate(version)
    return registry, version


def test_save_converts_both_parts_and_checks_them_against_keras(saved):
    registry, version = saved
    record = registry.litert(version)
    for part, name in (("scoring", "model.tflite"), ("features", "features.tflite")):
        assert record[part]["ok"] and record[part]["file"] == name
        assert record[part]["max_abs_diff"] <= conversion.TOLERANCE and record[part]["argmax_agrees"]
        # The smoke image and the sample of training images the result carries.
        assert record[part]["check_images"] == 1 + len(trained_result().check_images)
        assert (registry.path(version) / f"{name}.sha256").is_file()
    model = LiteRTModel(registry.litert_content(version, "scoring"))
    keras_model = trained_result().model
    for count in (1, 5, 1, 37):  # the input follows each batch's size, back and forth; 37 runs in slices
        pixels = random_pixels(count, 32, seed=count)
        expected = np.asarray(keras_model(pixels, training=False))
        np.testing.assert_allclose(model(pixels), expected, atol=conversion.TOLERANCE)
    assert model(np.zeros((0, 32, 32, 3), np.float32)).shape == (0, 2)


def test_a_version_whose_conversion_differs_is_saved_without_it_and_serves_with_keras(tmp_path, monkeypatch):
    from classifier.backbones import build_backbone
    from classifier.model import build_classifier, build_head

    # Another head on the same backbone: the scoring file computes something else, the extractor stays right.
    other = build_classifier(build_backbone("tiny", 32), build_head(32, 2, HPARAMS), 32)
    real_convert = conversion.convert
    monkeypatch.setattr(
        conversion, "convert", lambda model, size: real_convert(other if model.name == "classifier" else model, size)
    )
    registry = Registry(tmp_path)
    version = registry.save(trained_result())
    record = registry.litert(version)
    assert not record["scoring"]["ok"] and "differs from the Keras model" in record["scoring"]["reason"]
    assert "file" not in record["scoring"] and not (registry.path(version) / "model.tflite").exists()
    assert record["features"]["ok"]
    served = load_served(registry, version)
    assert served.runtime == "keras" and "differs from the Keras model" in served.note


def test_a_litert_file_whose_sha256_does_not_match_is_refused_and_keras_serves(saved):
    registry, version = saved
    path = registry.path(version) / "model.tflite"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    scorer = Scorer(registry.root)
    prediction = scorer.predict([image_bytes("bad", 5)])
    status = scorer.status()
    assert (status["runtime"], prediction.model_version) == ("keras", version)
    assert "sha256" in status["runtime_note"]
    expected = trained_result().model(random_pixels(1, 32, 0), training=False)
    np.testing.assert_allclose(scorer._current().forward(random_pixels(1, 32, 0)), expected, atol=1e-5)


def test_a_version_without_a_litert_file_serves_with_keras(saved):
    registry, version = saved
    for name in ("model.tflite", "model.tflite.sha256"):
        (registry.path(version) / name).unlink()
    metadata = json.loads((registry.path(version) / "metadata.json").read_text())
    del metadata["litert"]  # as a version saved before LiteRT files existed
    (registry.path(version) / "metadata.json").write_text(json.dumps(metadata))
    served = load_served(registry, version)
    assert served.runtime == "keras" and "saved before LiteRT files" in served.note


def test_litert_serves_the_keras_scores_and_keras_can_be_forced(saved):
    registry, version = saved
    images = [image_bytes(label, seed) for seed, label in enumerate(["bad", "ok", "bad", "ok", "other"])]
    litert, keras = Scorer(registry.root, threads=1), Scorer(registry.root, runtime="keras")
    by_litert, by_keras = litert.predict(images), keras.predict(images)
    assert (litert.status()["runtime"], keras.status()["runtime"]) == ("litert", "keras")
    assert keras.status()["runtime_note"] is None
    for a, b in zip(by_litert.probabilities, by_keras.probabilities, strict=True):
        assert a == pytest.approx(b, abs=conversion.TOLERANCE)
    with pytest.raises(ValueError, match="runtime"):
        load_served(registry, version, runtime="onnx")


def test_a_process_serving_litert_never_imports_tensorflow(saved, tmp_path):
    registry, _ = saved
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes("bad", 9))
    script = (
        "import sys, json; from classifier.scoring import Scorer; "
        f"s = Scorer({str(registry.root)!r}, threads=1); p = s.predict([{str(photo)!r}]); "
        "print(json.dumps([s.status()['runtime'], s.status()['rss_mb'], p.model_version, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))]))"
    )
    output = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    runtime, rss_mb, version, modules = json.loads(output.stdout.strip().splitlines()[-1])
    assert (runtime, version, modules) == ("litert", "v0001", [])
    assert 0 < rss_mb < 350


def test_the_feature_extractor_embeds_what_the_keras_backbone_does(saved, tmp_path):
    from classifier.data import Example
    from classifier.training import embed_examples

    registry, version = saved
    extractor = load_feature_extractor(registry, version, threads=1)
    assert extractor is not None and extractor.variant == trained_result().feature_cache["variant"]
    examples = [Example(sha256=f"{i:064x}", label="ok", data=image_bytes("ok", 50 + i)) for i in range(3)]
    hparams = registry.hparams(version)
    by_litert = embed_examples(examples, hparams, tmp_path / "a", for_training=False, extractor=extractor)
    by_keras = embed_examples(examples, hparams, tmp_path / "b", for_training=False)
    assert (by_litert.runtime, by_litert.embedded, by_keras.runtime) == ("litert", 3, "keras")
    [namespace_a] = (tmp_path / "a").iterdir()
    [namespace_b] = (tmp_path / "b").iterdir()
    assert namespace_a.name == namespace_b.name  # the same cache variant: a retrain finds these features
    for path in namespace_a.rglob("*.npy"):
        np.testing.assert_allclose(np.load(path), np.load(namespace_b / path.relative_to(namespace_a)), atol=1e-5)


def test_a_retrain_embeds_through_the_active_version_s_extractor(saved, tmp_path):
    from classifier.data import scan_folder
    from classifier.training import train_model
    from tests.classifier.synthetic import write_dataset

    registry, version = saved
    scan = scan_folder(write_dataset(tmp_path / "data", per_label=6))
    extractor = load_feature_extractor(registry, version)
    result = train_model(
        scan.examples, scan.labels, ["bad"], HPARAMS, cache_dir=tmp_path / "cache", extractor=extractor
    )
    assert (result.embedding_runtime, result.embedded) == ("litert", 12)
    assert Registry(tmp_path / "next").litert(Registry(tmp_path / "next").save(result))["scoring"]["ok"]
