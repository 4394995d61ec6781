"""What the benchmarks send through the desk: Fashion-MNIST photos as a marketplace would upload them.

Photos are encoded as files (JPEG, as most marketplaces send, or PNG), posted as listings through the real API,
and waited for in the database until scored. A served model can be trained on the same dataset beforehand, so
that a run needs nothing but the Debian Fashion-MNIST package.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path


def png_bytes(pixels) -> bytes:
    """An image array as a PNG file."""
    from PIL import Image

    output = io.BytesIO()
    Image.fromarray(pixels).save(output, format="PNG")
    return output.getvalue()


def product_photo(pixels) -> bytes:
    """A Fashion-MNIST image as a PNG product photo: dark garment on white, as the classifier's export writes it.

    The dataset stores negatives (bright garment on black). A model trained on exported photos must be streamed
    and tested on photos that look the same way, or it would be judged on another domain than it learnt.
    """
    return png_bytes(255 - pixels)


def classifier_environment():
    """What this process takes from its environment, read the way `python -m classifier` reads it."""
    from classifier.cli import Environment

    return Environment.read()


def fashion_mnist(split: str):
    """Fashion-MNIST's images and labels of `split`, from `FASHION_MNIST_DIR` when set (as the CLI reads it)."""
    from classifier.datasets import load_fashion_mnist

    return load_fashion_mnist(split, classifier_environment().fashion_mnist_dir)


def jpeg_photos(split: str, count: int, offset: int = 0) -> list[bytes]:
    """Distinct Fashion-MNIST photos as JPEG files, as a marketplace would send them."""
    from PIL import Image

    pixels, _ = fashion_mnist(split)
    photos, seen = [], set()
    index = offset
    while len(photos) < count:
        output = io.BytesIO()
        Image.fromarray(pixels[index % len(pixels)], "L").save(output, format="JPEG", quality=90)
        data = output.getvalue()
        index += 1
        digest = hashlib.sha256(data).hexdigest()
        if digest not in seen:
            seen.add(digest)
            photos.append(data)
    return photos


@dataclass(frozen=True)
class ClassPair:
    """Two Fashion-MNIST classes as training labels (folder names): the prohibited one, then the allowed one."""

    prohibited: str
    allowed: str

    @classmethod
    def parse(cls, text: str) -> ClassPair:
        """Read "Prohibited,Allowed" in either spelling of the class names; unknown names end the run."""
        from classifier.datasets import FOLDER_NAMES, class_index

        try:
            prohibited, allowed = (FOLDER_NAMES[class_index(name)] for name in text.split(","))
        except ValueError as error:
            raise SystemExit(f"--classes {text!r}: {error}") from None
        return cls(prohibited, allowed)

    @property
    def labels(self) -> tuple[str, str]:
        """Both labels, prohibited first."""
        return self.prohibited, self.allowed

    def rows(self, dataset_labels, label: str) -> list[int]:
        """The dataset rows of `label`'s class, in dataset order."""
        from classifier.datasets import FOLDER_NAMES

        return [int(i) for i in (dataset_labels == FOLDER_NAMES.index(label)).nonzero()[0]]


def class_examples(pair: ClassPair, split: str, per_class: int) -> list:
    """The first `per_class` photos of each class of `pair` in `split`, as labelled product-photo examples."""
    from classifier.data import Example

    pixels, labels = fashion_mnist(split)
    examples = []
    for label in pair.labels:
        for row in pair.rows(labels, label)[:per_class]:
            data = product_photo(pixels[row])
            examples.append(Example(sha256=hashlib.sha256(data).hexdigest(), label=label, data=data))
    return examples


def train_served_model(work: Path, backbone: str, per_class: int) -> str:
    """Train and activate a model on Fashion-MNIST with `backbone`; "Bag" plays the prohibited item."""
    from classifier.data import Example
    from classifier.datasets import FASHION_MNIST_CLASSES
    from classifier.hparams import HParams
    from classifier.registry import Registry
    from classifier.runtime import configure_threads
    from classifier.training import train_model

    environment = classifier_environment()
    configure_threads(environment.tf_threads)
    pixels, labels = fashion_mnist("train")
    counts: dict[str, int] = {}
    examples = []
    for image, label_index in zip(pixels, labels, strict=True):
        label = FASHION_MNIST_CLASSES[int(label_index)]
        if counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        data = png_bytes(image)
        examples.append(Example(sha256=hashlib.sha256(data).hexdigest(), label=label, data=data))
        if len(examples) >= per_class * len(FASHION_MNIST_CLASSES):
            break
    hparams = HParams(backbone=backbone, epochs=20, early_stopping_patience=5)
    result = train_model(
        examples,
        list(FASHION_MNIST_CLASSES),
        ["Bag"],
        hparams,
        cache_dir=work / "backbone-cache",
        backbone_cache=environment.backbone_cache,
    )
    registry = Registry(work / "models")
    version = registry.save(result)
    registry.activate(version)
    return version


def post_listing(
    session,
    base: str,
    token: str,
    external_id: str,
    photos: list[bytes],
    title: str = "bench listing",
    timeout: float = 120,
    wait_when_throttled: bool = False,
) -> tuple[float, dict]:
    """Post one listing with `photos` through the API; returns when the upload started and the API's answer.

    `wait_when_throttled`: on 429, wait the `Retry-After` the API sends and post again, as a marketplace client
    that respects the rate limit does (the learning loop streams faster than the default 1,200 a minute).
    """
    started = time.time()
    while True:
        files = [("images", upload(index, data)) for index, data in enumerate(photos)]
        response = session.post(
            f"{base}/api/v1/listings",
            data={"external_id": external_id, "title": title},
            files=files,
            headers={"Authorization": f"Token {token}"},
            timeout=timeout,
        )
        if response.status_code != 429 or not wait_when_throttled:
            break
        time.sleep(max(0.2, float(response.headers.get("Retry-After") or 1)))
    if response.status_code != 201:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:300]}")
    return started, response.json()


def post_paced(
    base: str, token: str, groups: list[list[bytes]], prefix: str, rate: float | None, threads: int = 16
) -> list[tuple[float, dict]]:
    """Post one listing per group of photos (`prefix-<index>`), started `rate` per second (open loop: a slow answer
    does not delay the next upload), or as fast as `threads` uploads at once allow when `rate` is None.

    Returns, in order, when each upload started and the API's answer.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()

    def send(index: int) -> tuple[float, dict]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return post_listing(local.session, base, token, f"{prefix}-{index}", groups[index])

    with ThreadPoolExecutor(threads) as pool:
        origin = time.monotonic()
        futures = []
        for index in range(len(groups)):
            delay = origin + index / rate - time.monotonic() if rate else 0
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, index))
        return [future.result() for future in futures]


def upload(index: int, data: bytes) -> tuple[str, bytes, str]:
    """A photo as one multipart file: a name and content type that match its format."""
    if data.startswith(b"\x89PNG"):
        return f"{index}.png", data, "image/png"
    return f"{index}.jpg", data, "image/jpeg"


def wait_scored(image_ids: list[int], timeout: float) -> None:
    """Wait until none of these images is pending any more; RuntimeError after `timeout` seconds."""
    from moderation.models import ImageStatus, ListingImage

    deadline = time.monotonic() + timeout
    while ListingImage.objects.filter(pk__in=image_ids, status=ImageStatus.PENDING).exists():
        if time.monotonic() > deadline:
            left = ListingImage.objects.filter(pk__in=image_ids, status=ImageStatus.PENDING).count()
            raise RuntimeError(f"{left} images still pending after {timeout} s")
        time.sleep(0.25)
