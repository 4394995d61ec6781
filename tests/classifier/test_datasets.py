"""Fashion-MNIST loading (IDX files, Keras fallback, errors) and export to the folder-per-label layout."""

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from classifier import datasets
from classifier.datasets import DatasetUnavailable, export_fashion_mnist, load_fashion_mnist
from tests.classifier.synthetic import write_idx


@pytest.fixture
def fake_fashion_mnist(tmp_path):
    """A tiny dataset in the Debian package's file layout: image i is filled with the value i, labels cycle 0..9."""
    directory = tmp_path / "fashion-mnist"
    directory.mkdir()
    for prefix, count in (("train", 40), ("t10k", 20)):
        images = np.stack([np.full((28, 28), i, dtype=np.uint8) for i in range(count)])
        images[:, 0, 0] = 255  # a corner pixel to show resizing keeps orientation
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images, 0x0803)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10, 0x0801)
    return directory


def test_reads_idx_files(fake_fashion_mnist):
    images, labels = load_fashion_mnist("train", fake_fashion_mnist)
    assert images.shape == (40, 28, 28)
    assert images.dtype == np.uint8
    assert list(labels[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert images[13, 5, 5] == 13
    assert not images.flags.writeable
    assert load_fashion_mnist("test", fake_fashion_mnist)[0].shape == (20, 28, 28)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", fake_fashion_mnist)


def test_export_writes_folder_layout_with_stable_names(fake_fashion_mnist, tmp_path):
    out = tmp_path / "out"
    counts = export_fashion_mnist(out, ["Pullover", "coat"], "train", per_class=3, directory=fake_fashion_mnist)
    assert counts == {"Pullover": 3, "Coat": 3}
    assert sorted(p.name for p in (out / "Pullover").iterdir()) == [
        "train-00002.png",
        "train-00012.png",
        "train-00022.png",
    ]
    assert sorted(p.name for p in (out / "Coat").iterdir()) == ["train-00004.png", "train-00014.png", "train-00024.png"]
    image = Image.open(out / "Coat" / "train-00014.png")
    assert image.size == (28, 28)
    # Written dark-on-white by default: the stored value 14 comes back as 255 - 14.
    assert np.asarray(image)[5, 5] == 255 - 14


def test_offset_continues_where_an_earlier_export_stopped(fake_fashion_mnist, tmp_path):
    counts = export_fashion_mnist(
        tmp_path / "more", ["Coat"], "train", per_class=5, offset=3, directory=fake_fashion_mnist
    )
    # Only four Coat images (4, 14, 24, 34) exist; from offset 3 there is one left.
    assert counts == {"Coat": 1}
    assert [p.name for p in (tmp_path / "more" / "Coat").iterdir()] == ["train-00034.png"]
    assert export_fashion_mnist(tmp_path / "all", ["Coat"], "test", directory=fake_fashion_mnist) == {"Coat": 2}


def test_either_spelling_of_class_names_and_folder_names(fake_fashion_mnist, tmp_path):
    counts = export_fashion_mnist(
        tmp_path / "a", ["t-shirt/top", "ANKLE_BOOT"], "test", per_class=1, directory=fake_fashion_mnist
    )
    assert counts == {"T-shirt_top": 1, "Ankle_boot": 1}
    assert (tmp_path / "a" / "T-shirt_top" / "test-00000.png").is_file()
    assert (tmp_path / "a" / "Ankle_boot" / "test-00009.png").is_file()
    assert datasets.class_index("T-shirt_top") == datasets.class_index("T-Shirt/Top") == 0
    assert datasets.class_index("ankle boot") == 9
    with pytest.raises(ValueError, match="unknown Fashion-MNIST class"):
        export_fashion_mnist(tmp_path / "b", ["Hat"], "test", directory=fake_fashion_mnist)
    with pytest.raises(ValueError, match="repeated"):
        export_fashion_mnist(tmp_path / "b", ["Coat", "coat"], "test", directory=fake_fashion_mnist)


def test_upscaled_export_is_deterministic(fake_fashion_mnist, tmp_path):
    export_fashion_mnist(tmp_path / "one", ["Trouser"], "train", per_class=2, size=96, directory=fake_fashion_mnist)
    export_fashion_mnist(tmp_path / "two", ["Trouser"], "train", per_class=2, size=96, directory=fake_fashion_mnist)
    first = (tmp_path / "one" / "Trouser" / "train-00001.png").read_bytes()
    assert first == (tmp_path / "two" / "Trouser" / "train-00001.png").read_bytes()
    pixels = np.asarray(Image.open(tmp_path / "one" / "Trouser" / "train-00001.png"))
    assert pixels.shape == (96, 96)
    assert pixels[0, 0] < 55 and pixels[90, 90] > 245  # inverted: the bright corner is dark


def test_keras_download_is_the_fallback(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    train = (np.zeros((3, 28, 28), np.uint8), np.array([4, 2, 4]))
    test = (np.ones((1, 28, 28), np.uint8), np.array([2]))
    monkeypatch.setattr("keras.datasets.fashion_mnist.load_data", lambda: (train, test))
    images, labels = load_fashion_mnist("train", empty)
    assert images.shape == (3, 28, 28) and list(labels) == [4, 2, 4]
    assert export_fashion_mnist(tmp_path / "out", ["Coat"], "train", directory=empty) == {"Coat": 2}


def test_neither_local_files_nor_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/: [Errno 111] refused")

    monkeypatch.setattr("keras.datasets.fashion_mnist.load_data", offline)
    with pytest.raises(DatasetUnavailable) as error:
        load_fashion_mnist("test", tmp_path / "nothing-here")
    message = str(error.value)
    assert "\n" not in message
    assert "nothing-here" in message and "dataset-fashion-mnist" in message and "FASHION_MNIST_DIR" in message


def test_corrupt_idx_file_is_reported(tmp_path):
    directory = tmp_path / "broken"
    directory.mkdir()
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(5), 0x0801)
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write((0x0803).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 10)
    with pytest.raises(DatasetUnavailable, match="truncated"):
        load_fashion_mnist("test", directory)


@pytest.mark.skipif(not datasets.DEFAULT_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_installed_dataset_has_the_published_shape():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_the_command_line_reads_the_directory_from_fashion_mnist_dir(fake_fashion_mnist, tmp_path, monkeypatch, capsys):
    from classifier.cli import main

    monkeypatch.setenv("FASHION_MNIST_DIR", str(fake_fashion_mnist))
    argv = ["export-fashion-mnist", "--out", str(tmp_path / "out"), "--classes", "Coat", "--split", "test"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["counts"] == {"Coat": 2}
