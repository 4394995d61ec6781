"""The learning-loop benchmark's photos as a marketplace sends them: violations rare among everything else.

A stream is drawn at a prevalence: that share of its photos is the prohibited Fashion-MNIST class, the rest the
allowed side. The allowed side is, by default, a mixture: every other Fashion-MNIST class in equal shares plus a
share of photos of other kinds (`classifier.other_photos`: scikit-image's, foolbox's and darknet's samples, and
synthetic blanks, gradients, stripes and noise). Its training label is then `ALLOWED_MIXTURE`. Naming one allowed
class (`--allowed Coat`) and a prevalence of 0.5 gives the benchmark as it was before: two classes, half each.

The train split feeds the initial training set and the stream, in that order and never the same photo twice; the
test split (and the other photos on the test side of their stable split) feeds the frozen test stream, drawn at
the same prevalence.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field

from bench.harness.workload import fashion_mnist, product_photo

ALLOWED_MIXTURE = "allowed"
#: The side of the other photos' stable split the test stream draws from.
OTHER_TEST_SHARE = 0.3
#: Longest side of an other photo as posted (the samples are up to 1,024 px; a product photo is far smaller).
OTHER_SIDE = 256


@dataclass(frozen=True)
class Item:
    """One photo of a stream: which it is, the label it truly has, and what kind of photo it is."""

    kind: str  # "fashion" (a dataset row) or "other" (an index into the other photos)
    split: str
    ref: int
    truth: str
    source: str  # the Fashion-MNIST class, or the other photo's source ("synthetic", "scikit-image", ...)

    @property
    def out_of_distribution(self) -> bool:
        """A photo of another kind altogether (blank, noise, a real photo of something else)."""
        return self.kind == "other"


@dataclass
class Streams:
    """Draws the initial set, the stream and the test stream for one prohibited class and its allowed side."""

    prohibited: str
    allowed: list[str]
    prevalence: float
    other_share: float
    seed: int = 0
    _pools: dict = field(default_factory=dict, repr=False)
    _others: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_names(cls, prohibited: str, allowed: str, prevalence: float, other_share: float | None, seed: int):
        """`allowed` "" means every other class plus other photos; one class name the old two-class stream."""
        from classifier.datasets import FOLDER_NAMES, class_index

        try:
            prohibited = FOLDER_NAMES[class_index(prohibited)]
            classes = [FOLDER_NAMES[class_index(name)] for name in allowed.split(",") if name]
        except ValueError as error:
            raise SystemExit(f"--prohibited/--allowed: {error}") from None
        mixture = not classes
        classes = classes or [name for name in FOLDER_NAMES if name != prohibited]
        if other_share is None:
            other_share = 0.1 if mixture else 0.0
        return cls(prohibited, classes, prevalence, other_share, seed)

    @property
    def allowed_label(self) -> str:
        """The allowed side's training label: the class itself for one class and no other photos, else the mixture."""
        return self.allowed[0] if len(self.allowed) == 1 and not self.other_share else ALLOWED_MIXTURE

    @property
    def labels(self) -> tuple[str, str]:
        """Both training labels, prohibited first."""
        return self.prohibited, self.allowed_label

    def _pool(self, split: str, name: str) -> list[int]:
        """The rows of class `name` in `split`, shuffled once by the seed; drawing pops from the front."""
        from classifier.datasets import FOLDER_NAMES

        if (split, name) not in self._pools:
            _, labels = fashion_mnist(split)
            rows = [int(i) for i in (labels == FOLDER_NAMES.index(name)).nonzero()[0]]
            random.Random(f"{self.seed}:{split}:{name}").shuffle(rows)
            self._pools[split, name] = rows
        return self._pools[split, name]

    def others(self, split: str) -> list:
        """The other photos of `split`'s side: the installed real ones on that side, and synthetic ones."""
        from classifier.other_photos import in_test_split, real_photos, synthetic_photos

        if split not in self._others:
            test = split == "test"
            real = [photo for photo in real_photos() if in_test_split(photo, OTHER_TEST_SHARE) == test]
            synthetic = synthetic_photos(400, seed=self.seed * 2 + (1 if test else 0) + 10_000)
            self._others[split] = [*real, *synthetic]
        return self._others[split]

    def _fashion(self, split: str, name: str, truth: str) -> Item:
        pool = self._pool(split, name)
        if not pool:
            raise SystemExit(f"Fashion-MNIST's {split} split has no {name} photos left for this stream")
        return Item("fashion", split, pool.pop(), truth, name)

    def _allowed_item(self, split: str, rng: random.Random) -> Item:
        if self.other_share and rng.random() < self.other_share:
            others = self.others(split)
            # Without replacement while they last: a repeated photo is a re-upload, which the stream adds apart.
            order = self._pools.setdefault((split, "other"), [])
            if not order:
                order.extend(
                    random.Random(f"{self.seed}:{split}:other:{rng.random()}").sample(range(len(others)), len(others))
                )
            index = order.pop()
            return Item("other", split, index, self.allowed_label, others[index].source)
        return self._fashion(split, rng.choice(self.allowed), self.allowed_label)

    def draw(self, split: str, count: int, prohibited: int | None = None, purpose: str = "") -> list[Item]:
        """`count` photos of `split`, `prohibited` of them (else `count` x the prevalence) of the prohibited class."""
        rng = random.Random(f"{self.seed}:{split}:{purpose}")
        positives = round(count * self.prevalence) if prohibited is None else prohibited
        items = [self._fashion(split, self.prohibited, self.prohibited) for _ in range(positives)]
        items += [self._allowed_item(split, rng) for _ in range(count - positives)]
        rng.shuffle(items)
        return items

    def content(self, item: Item) -> bytes:
        """The photo as posted: a Fashion-MNIST product photo (PNG), or the other photo as a JPEG."""
        if item.kind == "fashion":
            pixels, _ = fashion_mnist(item.split)
            return product_photo(pixels[item.ref])
        image = self.others(item.split)[item.ref].image()
        image.thumbnail((OTHER_SIDE, OTHER_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    def labelled(self, items: list[Item]) -> list:
        """`items` as labelled classifier examples (the frozen test stream)."""
        from classifier.data import Example

        examples = []
        for item in items:
            data = self.content(item)
            examples.append(Example(sha256=hashlib.sha256(data).hexdigest(), label=item.truth, data=data))
        return examples

    def export(self, items: list[Item], out) -> None:
        """Write `items` as a training folder: one subfolder per true label, one PNG per photo."""
        from PIL import Image

        for number, item in enumerate(items):
            folder = out / item.truth
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.open(io.BytesIO(self.content(item))).convert("RGB")
            image.save(folder / f"{number:05d}-{item.source}.png")
