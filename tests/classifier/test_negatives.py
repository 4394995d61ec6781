"""The allowed side is everything else: the mixture export, and out-of-distribution negatives in training."""

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from classifier.data import scan_folder
from classifier.hparams import HParams
from classifier.mixture import export_mixture
from classifier.negatives import ood_examples, resolve_allowed_label
from classifier.other_photos import in_test_split, real_photos
from classifier.registry import Registry
from classifier.training import train_model
from tests.classifier.synthetic import write_dataset, write_idx

HPARAMS = HParams(backbone="tiny", image_size=32, epochs=60, learning_rate=0.05, early_stopping_patience=60)


@pytest.fixture
def fake_fashion_mnist(tmp_path):
    """Ten classes, four train and two test images each, in the Debian package's layout."""
    directory = tmp_path / "fashion-mnist"
    directory.mkdir()
    for prefix, count in (("train", 40), ("t10k", 20)):
        images = np.stack([np.full((28, 28), i, dtype=np.uint8) for i in range(count)])
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images, 0x0803)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10, 0x0801)
    return directory


def test_mixture_puts_every_other_kind_of_photo_under_one_allowed_label(tmp_path, fake_fashion_mnist):
    counts = export_mixture(
        tmp_path / "out", "Pullover", split="train", per_class=3, allowed_per_class=2, synthetic=4,
        directory=fake_fashion_mnist,
    )  # fmt: skip
    assert counts["Pullover"] == {"Pullover": 3}
    allowed = counts["Allowed"]
    assert allowed["synthetic"] == 4 and "Pullover" not in allowed
    assert {name: allowed[name] for name in ("Coat", "Sneaker", "T-shirt_top")} == {
        "Coat": 2,
        "Sneaker": 2,
        "T-shirt_top": 2,
    }
    scan = scan_folder(tmp_path / "out")
    assert scan.labels == ["Allowed", "Pullover"]
    names = {path.name for path in (tmp_path / "out" / "Allowed").iterdir()}
    assert len(names) == 9 * 2 + allowed["real photos"] + 4
    train_side = [photo for photo in real_photos() if not in_test_split(photo, 0.3)]
    assert allowed["real photos"] == len(train_side)
    assert all(f"{photo.source}-{photo.name}.png" in names for photo in train_side)


def test_the_allowed_label_is_the_one_named_or_the_only_other_one():
    assert resolve_allowed_label(["Allowed", "Pullover"], ["Pullover"], None) == "Allowed"
    assert resolve_allowed_label(["Coat", "Pullover", "Shirt"], ["Pullover"], None) is None
    assert resolve_allowed_label(["Coat", "Pullover", "Shirt"], ["Pullover"], "Shirt") == "Shirt"
    with pytest.raises(ValueError):
        resolve_allowed_label(["Coat", "Pullover"], ["Pullover"], "Pullover")


def test_ood_negatives_leave_out_real_photos_on_the_test_side():
    examples = ood_examples("ok", synthetic=6, test_share=0.3)
    real = [photo for photo in real_photos() if not in_test_split(photo, 0.3)]
    assert len(examples) == len(real) + 6 and {example.label for example in examples} == {"ok"}
    held_out = {str(photo.path) for photo in real_photos() if in_test_split(photo, 0.3)}
    assert not held_out & {str(example.path) for example in examples if example.path}


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _unlike_anything(seed: int = 99) -> list[bytes]:
    """A solid blue rectangle (the "bad" images are blue-tinted noise), a white blank and uniform noise."""
    rng = np.random.default_rng(seed)
    blue = np.zeros((80, 120, 3))
    blue[..., 2] = 255
    return [_png(blue), _png(np.full((64, 64, 3), 255)), _png(rng.integers(0, 256, (96, 96, 3)))]


def _bad_scores(result, tmp_path, name):
    from classifier.scoring import Scorer

    registry = Registry(tmp_path / name)
    registry.activate(registry.save(result))
    scorer = Scorer(registry.root, runtime="keras")
    return [row["bad"] for row in scorer.predict(_unlike_anything()).probabilities], registry


def test_training_adds_the_negatives_to_training_only_and_records_the_allowed_label(tmp_path):
    scan = scan_folder(write_dataset(tmp_path / "data", per_label=20))
    hparams = replace(HPARAMS, ood_negatives=True, ood_synthetic=12, epochs=5)
    result = train_model(scan.examples, scan.labels, ["bad"], hparams, cache_dir=tmp_path / "cache")
    negatives = {example.sha256 for example in ood_examples("ok", synthetic=12, test_share=hparams.test_share)}
    assert result.metrics["ood_negatives"] == len(negatives) > 12
    assert negatives <= set(result.manifest["train"])
    assert not negatives & (set(result.manifest["test"]) | set(result.manifest["validation"]))
    assert result.metrics["split_sizes"]["test"] == sum(1 for e in scan.examples if e.sha256 in result.manifest["test"])
    registry = Registry(tmp_path / "models")
    version = registry.save(result)
    assert registry.metadata(version)["allowed_label"] == "ok"
    # Without an allowed label (two labels not prohibited) nothing is added and none is recorded.
    three = scan_folder(write_dataset(tmp_path / "three", per_label=10, labels=("bad", "ok", "other")))
    result = train_model(three.examples, three.labels, ["bad"], hparams, cache_dir=tmp_path / "cache")
    assert result.metrics["ood_negatives"] == 0 and result.allowed_label is None


def _product_photos(root, per_label: int = 40):
    """Grey product shots on white: "bad" a dark block (a garment's silhouette), "ok" a dark ring."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:64, 0:64]
    for label in ("bad", "ok"):
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            pixels = np.full((64, 64), 235.0) + rng.normal(0, 8, (64, 64))
            cy, cx, half, shade = *rng.integers(26, 38, 2), int(rng.integers(12, 20)), rng.uniform(30, 90)
            if label == "bad":
                pixels[cy - half : cy + half, cx - half : cx + half] = shade
            else:
                ring = np.abs(np.hypot(yy - cy, xx - cx) - half) < 3
                pixels[ring] = shade
            (root / label / f"{i}.png").write_bytes(_png(np.repeat(np.clip(pixels, 0, 255)[..., None], 3, axis=2)))
    return root


@pytest.mark.slow
def test_training_with_ood_negatives_scores_blanks_and_noise_as_allowed(tmp_path):
    """On the real backbone: a solid blue rectangle read as the prohibited dark block until negatives came.

    Judged over four seeds, not one: in this small world of dark blocks and rings a single model's score for one
    such photo varies with the seed and the CPU's arithmetic (0.24 to 0.85 with negatives over eight seeds on one
    machine), so one photo of one seed under 0.5 was a coin that fell one way on some CPUs. What holds on every
    seed is that the scores fall from about 1.0 to well under the review threshold on average and never reach
    the auto-action range.
    """
    scan = scan_folder(_product_photos(tmp_path / "data"))

    def trained(ood: bool, seed: int):
        hparams = HParams(backbone="mobilenet_v1", image_size=64, ood_negatives=ood, seed=seed)
        return train_model(
            scan.examples,
            scan.labels,
            ["bad"],
            hparams,
            cache_dir=tmp_path / "cache",
            log_dir=tmp_path / "logs" / f"{ood}-{seed}",
            backbone_cache=tmp_path / "backbones",
        )

    plain_scores, _ = _bad_scores(trained(False, 1), tmp_path, "plain")
    assert plain_scores[0] > 0.5 and np.mean(plain_scores) > 0.9, plain_scores
    ood_scores = []
    for seed in range(4):
        result = trained(True, seed)
        assert result.metrics["accuracy"] >= 0.9
        scores, registry = _bad_scores(result, tmp_path, f"ood-{seed}")
        assert registry.metadata(registry.active_version())["allowed_label"] == "ok"
        ood_scores.extend(scores)
    assert np.mean(ood_scores) < 0.5, ood_scores
    assert max(ood_scores) < 0.9, ood_scores


def test_the_negatives_together_weigh_a_share_of_the_allowed_examples():
    from classifier.data import Example
    from classifier.negatives import add_ood_negatives

    allowed = [Example.from_bytes(bytes([i]) * 10, "ok") for i in range(30)]
    groups = {"train": list(allowed), "validation": [], "test": []}
    added = add_ood_negatives(groups, "ok", synthetic=12, test_share=0.3, share=0.1)
    negatives = groups["train"][30:]
    assert len(negatives) == added > 12
    assert sum(e.weight for e in negatives) == pytest.approx(0.1 * 30)
    assert all(e.weight == negatives[0].weight for e in negatives)
    # A few negatives beside many allowed examples weigh 1 each, never more.
    many = {"train": [Example.from_bytes(bytes([i, j]), "ok") for i in range(50) for j in range(100)]}
    many.update(validation=[], test=[])
    add_ood_negatives(many, "ok", synthetic=12, test_share=0.3, share=0.1)
    assert {e.weight for e in many["train"][5000:]} == {1.0}


def test_the_command_line_exports_a_mixture_and_trains_on_it(tmp_path, fake_fashion_mnist, capsys, monkeypatch):
    import json

    from classifier.cli import main

    monkeypatch.setenv("FASHION_MNIST_DIR", str(fake_fashion_mnist))
    out = tmp_path / "mix"
    argv = ["export-mixture", "--out", str(out), "--prohibited", "Pullover", "--split", "train", "--per-class", "4"]
    assert main([*argv, "--allowed-per-class", "1", "--synthetic", "3"]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["counts"]
    assert counts["Pullover"] == {"Pullover": 4} and counts["Allowed"]["synthetic"] == 3
    registry = tmp_path / "models"
    common = ["--backbone", "tiny", "--image-size", "32", "--epochs", "3", "--cache-dir", str(tmp_path / "cache")]
    argv = ["train", "--data", str(out), "--registry", str(registry), "--prohibited", "Pullover", *common]
    assert main([*argv, "--allowed-label", "Allowed", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["allowed_label"] == "Allowed" and report["chosen_by_cv"] is None
    assert Registry(registry).metadata(report["version"])["allowed_label"] == "Allowed"
    assert main([*argv, "--allowed-label", "Pullover", "--no-progress"]) == 2
