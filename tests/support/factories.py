"""Rows as the desk's own code leaves them, made straight in the database; no model is needed to make any of them.

Users, listings (taken down ones too), images, decisions, model versions and training examples.
"""

import hashlib
import itertools
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management import call_command

from moderation import clock
from moderation.models import (
    Client,
    Decision,
    DecisionOutcome,
    ExampleSource,
    ImageStatus,
    Listing,
    ListingImage,
    ListingStatus,
    ModelVersion,
    TrainingExample,
)
from moderation.permissions import ensure_groups
from moderation.selectors.training import trainable_examples
from tests.support.images import ALLOWED, PROHIBITED, fashion_png, labelled_png, png_bytes, write_training_folder

_counter = itertools.count(1)
PASSWORD = "pw-for-tests-only"


def make_user(name: str, **extra):
    """A plain user (no role)."""
    return get_user_model().objects.create_user(username=name, password=PASSWORD, **extra)


def make_moderator(username: str | None = None, password: str = PASSWORD):
    """A user in the moderators group, as `create_moderator` makes them."""
    moderators, _ = ensure_groups()
    user = get_user_model().objects.create_user(username or f"mod{next(_counter)}", password=password)
    user.groups.add(moderators)
    return user


def make_flagged(probability=0.9, listing=None, title="Listing", label="weapon", with_file=False, **fields):
    """A flagged image straight in the database, as a scoring worker would leave it (no model needed)."""
    n = next(_counter)
    listing = listing or Listing.objects.create(
        client=Client.objects.desk(),
        external_id=f"ext-{n}",
        title=title,
        description="desc",
        status=ListingStatus.IN_REVIEW,
    )
    values = {
        "sha256": f"{n:064x}",
        "status": ImageStatus.FLAGGED,
        "prohibited_probability": probability,
        "prohibited_label": label,
        "model_version": "v0001",
        "image_format": "PNG",
        "flagged_at": clock.now(),
    }
    image = ListingImage(listing=listing, **{**values, **fields})
    if with_file:
        image.file.save(f"test-{n}.png", ContentFile(png_bytes(size=(8, 8), color=(200, 30, 30))), save=False)
    else:
        image.file.name = f"images/test-{n}.png"
    image.save()
    return image


def store_listing(*, external_id: str, files, title: str = "", description: str = "", client=None, **extra) -> Listing:
    """A listing stored through the intake service (as the desk's own client unless `client` says otherwise)."""
    from moderation.services.ingest import create_listing

    return create_listing(
        client=client or Client.objects.desk(),
        external_id=external_id,
        title=title,
        description=description,
        files=files,
        **extra,
    ).listing


def listing_with(*colors, external_id: str = "ext") -> Listing:
    """A listing stored through the intake service, one JPEG of each colour."""
    from tests.support.images import jpeg_bytes, upload

    return store_listing(external_id=external_id, files=[upload(jpeg_bytes(color=color)) for color in colors])


def make_api_key(user, client_name: str = "marketplace") -> str:
    """A new API key of client `client_name` (created if new) acting as `user`."""
    from moderation.services.clients import get_or_create_client, issue_key

    client, _ = get_or_create_client(name=client_name)
    return issue_key(client=client, user=user, name=user.username)[1]


def make_image(label: str = PROHIBITED, status: str = ImageStatus.FLAGGED, listing: Listing | None = None):
    """A scored listing image of `label`'s colour stored under MEDIA_ROOT, as intake leaves it."""
    data = labelled_png(label)
    listing = listing or Listing.objects.create(
        client=Client.objects.desk(), external_id=f"ext-{next(_counter)}", title="a listing"
    )
    image = ListingImage(
        listing=listing,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        width=32,
        height=32,
        image_format="PNG",
        status=status,
        prohibited_probability=0.8,
        prohibited_label=PROHIBITED,
        model_version="v0001",
    )
    image.file.save(f"{image.sha256[:16]}.png", ContentFile(data), save=False)
    image.save()
    return image


def make_decision(image: ListingImage, moderator, outcome: str, label: str | None = "") -> Decision:
    """A decision row; `label=None` gives the label the outcome teaches ("bad" or "ok"), "" none at all."""
    if label is None:
        label = PROHIBITED if outcome == DecisionOutcome.CONFIRM else ALLOWED
    return Decision.objects.create(
        image=image,
        moderator=moderator,
        outcome=outcome,
        label=label,
        model_version=image.model_version,
        prohibited_probability=image.prohibited_probability,
    )


def mirror_active_labels() -> ModelVersion:
    """An active ModelVersion row naming the labels, for code that only needs the label set."""
    return ModelVersion.objects.create(
        version="v0001", labels=[ALLOWED, PROHIBITED], prohibited_labels=[PROHIBITED], is_active=True
    )


def import_initial_set(root: Path, per_label: int = 12, fashion: bool = False) -> None:
    """The initial training set, imported as `make run` does, with "bad" marked prohibited."""
    folder = write_training_folder(root / "initial-set", per_label=per_label, fashion=fashion)
    call_command("import_training_set", str(folder), "--prohibited", PROHIBITED)


def add_holdout(per_label: int, fashion: bool = False, seed: int = 1000) -> None:
    """Human-labelled holdout examples, as decisions whose hash put them in the holdout produce them."""
    folder = Path(settings.MEDIA_ROOT) / "holdout"
    folder.mkdir(parents=True, exist_ok=True)
    for label in (PROHIBITED, ALLOWED):
        for index in range(per_label):
            if fashion:
                data = fashion_png(label, 500 + index)
            else:
                data = labelled_png(label, seed=seed + index + (0 if label == PROHIBITED else 50_000))
            sha = hashlib.sha256(data).hexdigest()
            (folder / f"{sha}.png").write_bytes(data)
            TrainingExample.objects.create(
                sha256=sha, path=f"holdout/{sha}.png", label=label, source=ExampleSource.DECISION, is_holdout=True
            )


def shuffle_training_labels(seed: int = 7) -> None:
    """Relabel the trainable examples so labels carry no information about the images.

    Within each true label, exactly half become "bad" and half "ok" (in random order): a plain coin flip per
    example can correlate with the colours by chance on a small set and then teach the real rule.
    """
    rng = np.random.default_rng(seed)
    for label in (PROHIBITED, ALLOWED):
        rows = list(trainable_examples().filter(label=label).order_by("id"))
        new_labels = [PROHIBITED, ALLOWED] * (len(rows) // 2) + [PROHIBITED] * (len(rows) % 2)
        rng.shuffle(new_labels)
        for row, new_label in zip(rows, new_labels, strict=True):
            row.label = new_label
            row.save(update_fields=["label"])


def taken_down_listing(*, moderator, client=None, images: int = 1, external_id: str | None = None) -> Listing:
    """A listing of `images` flagged photos, each confirmed by `moderator` through the review service (taken down)."""
    from moderation.services import review

    listing = Listing.objects.create(
        client=client or Client.objects.desk(),
        external_id=external_id or f"ad-{next(_counter)}",
        title="Wool coat",
        description="Size M",
        status=ListingStatus.IN_REVIEW,
    )
    for _ in range(images):
        image = make_flagged(listing=listing, with_file=True)
        review.claim_item(user=moderator, image_id=image.pk)
        review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    listing.refresh_from_db()
    return listing
