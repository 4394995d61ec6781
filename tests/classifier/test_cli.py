import json
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.cli import main
from tests.classifier.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_train_evaluate_predict(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", per_label=20)
    registry = tmp_path / "models"
    common = ["--registry", str(registry), "--backbone", "tiny", "--image-size", "32", "--cache-dir", str(tmp_path)]
    code, out, _ = run(
        capsys,
        "train",
        "--data",
        str(data),
        *common,
        "--prohibited",
        "bad",
        "--epochs",
        "20",
        "--activate",
        "--seed",
        "1",
    )
    assert code == 0
    report = json.loads(out[-1])
    assert report["version"] == "v0001" and report["embedded"] == 40 and report["cached"] == 0
    assert {"accuracy", "recall", "specificity", "auc", "confusion_matrix"} <= set(report["metrics"])
    assert (registry / "active").read_text().strip() == "v0001"

    code, out, _ = run(capsys, "evaluate", "--registry", str(registry), "--data", str(data))
    assert code == 0
    metrics = json.loads(out[-1])
    assert metrics["n"] == 40 and metrics["labels"] == ["allowed", "prohibited"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 40

    image = str(data / "bad" / "0.png")
    code, out, _ = run(capsys, "predict", "--registry", str(registry), image)
    assert code == 0
    prediction = json.loads(out[-1])
    assert prediction["model_version"] == "v0001"
    assert set(prediction["predictions"][image]) == {"bad", "ok"}


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--data", "/nonexistent", "--registry", "/tmp/x"],
        ["predict", "--registry", "/nonexistent", "image.png"],
        ["evaluate", "--registry", "/nonexistent", "--data", "/nonexistent"],
        ["frobnicate"],
        ["train", "--epochs", "many"],
    ],
)
def test_errors_exit_2_with_one_line(argv, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == []
    assert len(err) == 1 and "Traceback" not in err[0]


@pytest.mark.parametrize(
    ("flags", "words"),
    [(["--feature-layer", "nope"], "no layer 'nope'"), (["--pooling", "max"], "invalid choice: 'max'")],
)
def test_bad_feature_options_exit_2_with_one_line(tmp_path, capsys, flags, words):
    write_dataset(tmp_path / "data", per_label=2)
    code, out, err = run(
        capsys, "train", "--data", str(tmp_path / "data"), "--registry", str(tmp_path / "m"), "--backbone", "tiny",
        *flags,
    )  # fmt: skip
    assert code == 2 and out == []
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").glob("v*"))


def test_label_errors_exit_2(tmp_path, capsys):
    write_dataset(tmp_path / "one", per_label=2, labels=("ok",))
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "one"), "--registry", str(tmp_path / "m"))
    assert code == 2 and "two label" in err[0]


def test_module_entry_point_exit_code():
    completed = subprocess.run(
        [sys.executable, "-m", "classifier", "predict"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 2
    assert len(completed.stderr.strip().splitlines()) == 1


def test_threads_come_from_vigia_tf_threads_for_commands_that_run_tensorflow(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("classifier.runtime.configure_threads", calls.append)
    monkeypatch.setenv("VIGIA_TF_THREADS", "3")
    run(capsys, "train", "--registry", str(tmp_path / "none"), "--data", str(tmp_path / "no-data"), "--prohibited", "x")
    monkeypatch.delenv("VIGIA_TF_THREADS")
    run(capsys, "evaluate", "--registry", str(tmp_path / "none"), "--data", str(tmp_path))
    # `predict` leaves TensorFlow alone: its Scorer sets the threads only if Keras serves.
    run(capsys, "predict", "--registry", str(tmp_path / "none"), "image.png")
    assert calls == [3, None]
    monkeypatch.setenv("VIGIA_TF_THREADS", "many")
    code, out, err = run(capsys, "predict", "--registry", str(tmp_path / "none"), "image.png")
    assert code == 2 and out == [] and len(err) == 1 and "VIGIA_TF_THREADS" in err[0]
    monkeypatch.delenv("VIGIA_TF_THREADS")
    monkeypatch.setenv("VIGIA_RUNTIME", "onnx")
    code, out, err = run(capsys, "predict", "--registry", str(tmp_path / "none"), "image.png")
    assert code == 2 and "VIGIA_RUNTIME" in err[0]
