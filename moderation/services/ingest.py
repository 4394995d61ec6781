"""Intake: a marketplace listing and its photos come in; all are stored, or none.

Every photo is validated before anything is written, the listing and its images are created in one transaction,
and scoring is queued only once that transaction commits, so a rolled-back upload never reaches a worker. Photos
whose exact bytes the active model already scored reuse that score and are routed at once.
"""

import uuid
from collections.abc import Sequence

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from moderation import clock
from moderation.models import ImageStatus, Listing, ListingImage
from moderation.selectors.models import active_model
from moderation.services.listings import refresh_listing_status
from moderation.services.queueing import queue_scoring
from moderation.services.routing import reuse_existing_score
from moderation.validation import ImageValidationError, ValidatedImage, validate_image


class DuplicateListing(Exception):
    """A listing with this external id exists already; the API answers 409."""

    def __init__(self, external_id: str):
        super().__init__(f"A listing with external_id {external_id!r} already exists.")
        self.external_id = external_id


def validate_images(files: Sequence) -> list[ValidatedImage]:
    """Validate every file, naming the first bad one by its position in the request."""
    if not files:
        raise ImageValidationError("no_images", "At least one image is required.")
    limit = settings.VIGIA_MAX_IMAGES_PER_LISTING
    if len(files) > limit:
        raise ImageValidationError("too_many_files", f"{len(files)} images sent; at most {limit} are accepted.")
    validated = []
    for index, uploaded in enumerate(files):
        try:
            validated.append(validate_image(uploaded))
        except ImageValidationError as error:
            raise ImageValidationError(error.code, f"images[{index}]: {error.detail}", error.status) from error
    return validated


def create_listing(*, external_id: str, title: str, description: str, files: Sequence, submitted_by=None) -> Listing:
    """Store a listing with its validated photos and queue them for scoring on commit.

    Raises `ImageValidationError` (nothing stored) or `DuplicateListing`.
    """
    if Listing.objects.filter(external_id=external_id).exists():
        raise DuplicateListing(external_id)
    validated = validate_images(files)
    written: list[str] = []
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    listing = Listing.objects.create(
                        external_id=external_id, title=title, description=description, submitted_by=submitted_by
                    )
            except IntegrityError as error:
                # Two requests with the same id raced past the check above; the unique constraint decides.
                raise DuplicateListing(external_id) from error
            active = active_model()
            now = clock.now()
            to_score = []
            for item in validated:
                image = ListingImage(
                    listing=listing,
                    sha256=item.sha256,
                    size_bytes=item.size,
                    width=item.width,
                    height=item.height,
                    image_format=item.format,
                    status=ImageStatus.PENDING,
                    enqueued_at=now,
                )
                # A generated name: nothing the sender chose (path, extension) reaches the file system.
                image.file.save(f"{uuid.uuid4().hex}.{item.extension}", ContentFile(item.content), save=False)
                written.append(image.file.name)
                image.save()
                if not (active and reuse_existing_score(image=image, model_version=active.version)):
                    to_score.append(image.pk)
            refresh_listing_status(listing.pk)
            queue_scoring(image_ids=to_score)
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise
    listing.refresh_from_db()
    return listing
