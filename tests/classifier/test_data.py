import hashlib

import pytest

from classifier.data import DatasetError, Example, check_labels, scan_folder, split_of
from tests.classifier.synthetic import image_bytes, write_dataset


def test_scan_folder_lists_images_and_skips_unreadable_files(tmp_path):
    write_dataset(tmp_path, per_label=3)
    (tmp_path / "ok" / "junk.png").write_bytes(b"this is not a png")
    (tmp_path / "ok" / "notes.txt").write_text("not an image")
    scan = scan_folder(tmp_path)
    assert scan.labels == ["bad", "ok"]
    assert len(scan.examples) == 6
    skipped = {name.split("/")[-1]: reason for name, reason in scan.skipped}
    assert set(skipped) == {"junk.png", "notes.txt"}
    example = next(e for e in scan.examples if e.path.name == "0.png" and e.label == "ok")
    assert example.sha256 == hashlib.sha256(example.path.read_bytes()).hexdigest()


def test_same_picture_under_two_labels_is_skipped(tmp_path):
    write_dataset(tmp_path, per_label=2)
    (tmp_path / "bad" / "copy.png").write_bytes((tmp_path / "ok" / "0.png").read_bytes())
    scan = scan_folder(tmp_path)
    assert len(scan.examples) == 3
    assert len(scan.skipped) == 2


def test_empty_label_folder_is_an_error(tmp_path):
    write_dataset(tmp_path, per_label=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        scan_folder(tmp_path)


def test_a_label_with_only_broken_files_is_an_error(tmp_path):
    write_dataset(tmp_path, per_label=2)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DatasetError, match="broken"):
        scan_folder(tmp_path)


def test_one_label_is_an_error(tmp_path):
    write_dataset(tmp_path, per_label=2, labels=("ok",))
    with pytest.raises(DatasetError, match="two label"):
        scan_folder(tmp_path)


def test_check_labels_rejects_unknown_prohibited_and_missing_images():
    examples = [Example.from_bytes(image_bytes("ok", 1), "ok"), Example.from_bytes(image_bytes("bad", 2), "bad")]
    check_labels(examples, ["ok", "bad"], ["bad"])
    with pytest.raises(DatasetError, match="prohibited"):
        check_labels(examples, ["ok", "bad"], ["weapons"])
    with pytest.raises(DatasetError, match="without any image"):
        check_labels(examples, ["ok", "bad", "other"], ["bad"])
    with pytest.raises(DatasetError, match="two labels"):
        check_labels(examples[:1], ["ok"], [])


def test_split_shares_and_stability_as_data_grows():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    before = {sha: split_of(sha, 0.3, 0.1) for sha in shas[:1000]}
    after = {sha: split_of(sha, 0.3, 0.1) for sha in shas}
    assert all(after[sha] == split for sha, split in before.items())
    counts = {name: list(after.values()).count(name) for name in ("train", "validation", "test")}
    assert 0.27 < counts["test"] / 4000 < 0.33
    assert 0.08 < counts["validation"] / 4000 < 0.12
    assert split_of(shas[0], 0.0, 0.0) == "train"
