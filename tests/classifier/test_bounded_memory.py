"""`predict` and `evaluate` on many images hold one batch of decoded pixels at a time, never all of them."""

import json

import numpy as np

from classifier import images
from classifier.cli import main
from classifier.registry import Registry
from tests.classifier.synthetic import image_bytes
from tests.classifier.trained import trained_result

IMAGES = 300
BATCH = 16


def _registry(root):
    registry = Registry(root)
    registry.activate(registry.save(trained_result()))
    return registry


def _counting_decoder(monkeypatch):
    """Wrap `decode_image` to count decodes and to track how many decoded images are still alive at once."""
    import weakref

    state = {"decoded": 0, "refs": [], "peak_alive": 0}
    real = images.decode_image

    class Pixels(np.ndarray):
        """An ndarray subclass, so a weak reference can tell when the decoded image has been released."""

    def counting(source, size):
        pixels = real(source, size).view(Pixels)
        state["decoded"] += 1
        state["refs"] = [ref for ref in state["refs"] if ref() is not None] + [weakref.ref(pixels)]
        state["peak_alive"] = max(state["peak_alive"], len(state["refs"]))
        return pixels

    monkeypatch.setattr(images, "decode_image", counting)
    return state


def test_predict_decodes_and_scores_one_batch_at_a_time(tmp_path, capsys, monkeypatch):
    registry = _registry(tmp_path / "models")
    paths = []
    for i in range(IMAGES):
        path = tmp_path / "photos" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(image_bytes("bad" if i % 2 else "ok", seed=10_000 + i))
        paths.append(str(path))
    decoder = _counting_decoder(monkeypatch)
    from classifier.scoring import Scorer

    calls = []
    real_predict = Scorer.predict

    def spying_predict(self, batch):
        calls.append((len(batch), decoder["decoded"]))
        return real_predict(self, batch)

    monkeypatch.setattr(Scorer, "predict", spying_predict)
    code = main(["predict", "--registry", str(registry.root), "--batch-size", str(BATCH), *paths])
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert code == 0, captured.err.strip().splitlines()[-1]
    report = json.loads(out[-1])
    assert len(report["predictions"]) == IMAGES and set(report["predictions"][paths[0]]) == {"bad", "ok"}
    assert decoder["decoded"] == IMAGES
    assert max(size for size, _ in calls) <= BATCH and len(calls) == -(-IMAGES // BATCH)
    # Lazily: nothing is decoded ahead of the batch being scored.
    assert [before for _, before in calls] == [BATCH * i for i in range(len(calls))]
    assert decoder["peak_alive"] <= BATCH


def test_predict_refuses_a_non_positive_batch_size(tmp_path, capsys):
    registry = _registry(tmp_path / "models")
    code = main(["predict", "--registry", str(registry.root), "--batch-size", "0", "x.png"])
    assert code == 2 and "--batch-size" in capsys.readouterr().err


def test_evaluate_runs_the_model_over_one_batch_at_a_time(tmp_path, capsys, monkeypatch):
    registry = _registry(tmp_path / "models")
    for i in range(IMAGES):
        label = "bad" if i % 2 else "ok"
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(image_bytes(label, seed=20_000 + i))
    decoder = _counting_decoder(monkeypatch)
    import classifier.embedding as embedding

    batches = []
    real_traced = embedding.traced_forward

    def spying_traced(model, size):
        forward = real_traced(model, size)

        def spying(batch):
            batches.append((len(batch), decoder["decoded"]))
            return forward(batch)

        return spying

    monkeypatch.setattr(embedding, "traced_forward", spying_traced)
    argv = ["evaluate", "--registry", str(registry.root), "--data", str(tmp_path / "data"), "--batch-size", str(BATCH)]
    code = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert json.loads(out[-1])["n"] == IMAGES
    assert sum(size for size, _ in batches) == IMAGES and max(size for size, _ in batches) <= BATCH
    assert all(before <= BATCH * (i + 1) for i, (_, before) in enumerate(batches))
    assert decoder["peak_alive"] <= BATCH + 1
