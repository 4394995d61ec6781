import io

import numpy as np
import pytest
from PIL import Image

from classifier.scoring import NoActiveModel, Scorer
from tests.classifier.synthetic import image_bytes
from tests.classifier.trained import break_model, trained_result, two_versions


@pytest.fixture
def registry(tmp_path):
    registry = two_versions(tmp_path)
    return registry


def test_no_active_model(tmp_path):
    scorer = Scorer(tmp_path)
    with pytest.raises(NoActiveModel):
        scorer.predict([image_bytes("ok", 1)])


def test_predicts_bytes_paths_and_arrays_in_one_batch(registry, tmp_path):
    registry.activate("v0001")
    scorer = Scorer(registry.root)
    path = tmp_path / "photo.png"
    path.write_bytes(image_bytes("bad", 3))
    array = np.asarray(Image.open(io.BytesIO(image_bytes("ok", 4))))
    prediction = scorer.predict([image_bytes("bad", 2), path, str(path), array])
    assert prediction.model_version == "v0001" == scorer.version
    assert len(prediction.probabilities) == 4
    for probabilities in prediction.probabilities:
        assert set(probabilities) == {"bad", "ok"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.probabilities[1] == pytest.approx(prediction.probabilities[2])
    # Matches the trained model on the same pixels: scoring never drifts from training.
    direct = np.asarray(trained_result().model(array[None].astype(np.float32), training=False))[0]
    assert [prediction.probabilities[3][label] for label in ("bad", "ok")] == pytest.approx(direct.tolist(), abs=1e-5)
    assert scorer.labels == ["bad", "ok"] and scorer.prohibited == ["bad"]


def test_reloads_when_the_pointer_changes(registry):
    registry.activate("v0001")
    scorer = Scorer(registry.root)
    assert scorer.version == "v0001"
    assert scorer.refresh() is False
    registry.activate("v0002")
    assert scorer.refresh() is True
    assert scorer.predict([image_bytes("ok", 1)]).model_version == "v0002"
    registry.rollback()
    assert scorer.predict([image_bytes("ok", 1)]).model_version == "v0001"


def test_keeps_the_old_model_when_the_new_one_is_broken(registry):
    registry.activate("v0001")
    scorer = Scorer(registry.root)
    assert scorer.version == "v0001"
    break_model(registry, "v0002")
    registry.activate("v0002")
    assert scorer.refresh() is False
    assert scorer.predict([image_bytes("ok", 1)]).model_version == "v0001"


def test_a_process_started_on_a_broken_version_has_no_model(registry):
    (registry.root / "v0001" / "model.sha256").write_text("0" * 64)
    registry.activate("v0001")
    with pytest.raises(NoActiveModel, match="sha256"):
        Scorer(registry.root).predict([image_bytes("ok", 1)])
