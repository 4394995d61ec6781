"""Out-of-distribution negatives: photos of nothing prohibited that every training run adds to the allowed side.

A model trained on a prohibited class and the products sellers usually photograph has still never seen a blank
photo, a screenshot of noise or a holiday snapshot, and calls them whatever they resemble least badly: a solid
blue rectangle scored 1.000 for Pullover. Training adds such photos (`classifier.other_photos`: synthetic blanks,
splits, gradients, stripes and noise, and the installed real photos of other subjects) as examples of the
allowed label, to the training split only. Real photos on the test side of their own split (`in_test_split`)
are never added, so a benchmark can test on them; synthetic ones come from a seed of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from classifier.data import Example

#: Seed of the synthetic negatives training adds: benchmarks and demos draw theirs from other seeds.
TRAINING_SEED = 7


def resolve_allowed_label(labels: Sequence[str], prohibited: Sequence[str], allowed_label: str | None) -> str | None:
    """The label that means "nothing prohibited": the one given, else the only label that is not prohibited.

    With several allowed labels and none named there is no single answer, and None is returned: what a
    rejection teaches, and where negatives go, is then the caller's to say.
    """
    if allowed_label is not None:
        if allowed_label not in labels or allowed_label in prohibited:
            raise ValueError(f"allowed label {allowed_label!r} must be one of the labels and not prohibited")
        return allowed_label
    allowed = [label for label in labels if label not in prohibited]
    return allowed[0] if len(allowed) == 1 else None


def ood_examples(allowed_label: str, *, synthetic: int, test_share: float) -> list[Example]:
    """Examples of ``allowed_label``: ``synthetic`` generated photos and the real ones outside the test side."""
    import io

    from classifier.hashing import file_sha256
    from classifier.other_photos import in_test_split, real_photos, synthetic_photos

    examples = []
    for photo in real_photos():
        if not in_test_split(photo, test_share):
            examples.append(Example(sha256=file_sha256(photo.path), label=allowed_label, path=photo.path))
    for photo in synthetic_photos(synthetic, seed=TRAINING_SEED):
        buffer = io.BytesIO()
        photo.image().save(buffer, format="PNG")
        examples.append(Example.from_bytes(buffer.getvalue(), allowed_label))
    return examples


def add_ood_negatives(
    groups: dict[str, list[Example]], allowed_label: str, *, synthetic: int, test_share: float, share: float
) -> int:
    """Append the negatives to ``groups["train"]``, leaving out any picture a split already holds; returns how many.

    Together they weigh ``share`` of the allowed label's own training examples (each at most 1): enough to pull
    what is far from every product to the allowed side, without taking the weight of the look-alikes near the
    boundary, which is where accuracy is decided.
    """
    seen = {example.sha256 for group in groups.values() for example in group}
    allowed_total = sum(float(e.weight) for e in groups["train"] if e.label == allowed_label)
    new = []
    for example in ood_examples(allowed_label, synthetic=synthetic, test_share=test_share):
        if example.sha256 not in seen:
            seen.add(example.sha256)
            new.append(example)
    weight = min(1.0, share * allowed_total / len(new)) if new and allowed_total > 0 else 1.0
    groups["train"].extend(replace(example, weight=weight) for example in new)
    return len(new)
