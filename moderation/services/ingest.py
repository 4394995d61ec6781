"""Intake: a client's listing and its photos come in; all are stored, or none; retries are safe.

Every photo is validated before anything is written, the listing and its images are created in one transaction,
and scoring is queued through the outbox in that transaction, so a rolled-back upload never reaches a worker and a
committed one always does, even if the broker is down at that moment. Photos whose exact bytes the active model
already scored reuse that score and are routed at once; they take the earlier photo's PDQ hash too and are
matched against the hash banks on a scoring worker (`match_images`), where the banks are.

A client that did not hear back (a timeout) sends the same request again. The same `external_id` with the same
photos (by sha256 of what was sent) is that retry and gets the listing it already created; different photos under
the same `external_id` are a conflict. An `Idempotency-Key` makes any create safe to repeat the same way.
"""

import contextlib
import errno
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, IntegrityError, connection, transaction

from moderation import clock, outbox
from moderation.models import Client, IdempotencyRecord, ImageStatus, Listing, ListingImage
from moderation.selectors.models import active_model
from moderation.services.listings import refresh_listing_status
from moderation.services.matching import HASH_FIELDS
from moderation.services.queueing import queue_scoring
from moderation.services.routing import reuse_existing_score
from moderation.validation import ImageValidationError, ValidatedImage, validate_image

logger = logging.getLogger(__name__)

#: Errors of the file system that mean "no room": the API answers 507, the client retries later.
NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


class DuplicateListing(Exception):
    """The client already sent a listing with this external id, with other photos; the API answers 409."""

    def __init__(self, listing: Listing):
        super().__init__(
            f"A listing with external_id {listing.external_id!r} already exists (id {listing.pk}) with other photos."
        )
        self.listing = listing


class IdempotencyKeyReused(Exception):
    """An `Idempotency-Key` already used for a different request; the API answers 409."""

    def __init__(self, key: str):
        super().__init__(f"Idempotency-Key {key!r} was already used for a different request.")
        self.key = key


class ListingWithdrawn(Exception):
    """Photos sent to a listing the client has withdrawn; the API answers 409."""


class StorageFull(Exception):
    """The media disk has no room for a photo: nothing of the request was stored; the API answers 507."""


class StorageUnavailable(Exception):
    """The media storage failed otherwise (read-only, gone, permissions): nothing was stored; the API answers 503."""


@dataclass(frozen=True)
class Intake:
    """What a create did: the listing, and whether it was made now (201) or is the one a retry asked for (200)."""

    listing: Listing
    created: bool


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


def photos_fingerprint(validated: Sequence[ValidatedImage]) -> str:
    """A digest of the photos as sent, in order: what tells a retry from a different listing."""
    return hashlib.sha256("\n".join(item.sha256 for item in validated).encode()).hexdigest()


def request_fingerprint(*, operation: str, fields: dict, validated: Sequence[ValidatedImage] = ()) -> str:
    """A digest of a whole request (what it does, its fields and its photos), for an `Idempotency-Key`."""
    payload = json.dumps({"operation": operation, "fields": fields, "photos": [i.sha256 for i in validated]})
    return hashlib.sha256(payload.encode()).hexdigest()


def create_listing(
    *,
    client: Client,
    external_id: str,
    title: str,
    description: str,
    files: Sequence,
    submitted_by=None,
    idempotency_key: str | None = None,
) -> Intake:
    """Store a listing with its validated photos and queue them for scoring; a retry gets the first result.

    Raises `ImageValidationError` (nothing stored), `DuplicateListing` or `IdempotencyKeyReused`.
    """
    validated = validate_images(files)
    photos = photos_fingerprint(validated)
    fingerprint = request_fingerprint(
        operation="create_listing",
        fields={"external_id": external_id, "title": title, "description": description},
        validated=validated,
    )
    earlier = _earlier_result(client, external_id, photos, idempotency_key, fingerprint)
    if earlier is not None:
        return Intake(listing=earlier, created=False)
    written: list[str] = []
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    listing = Listing.objects.create(
                        client=client,
                        external_id=external_id,
                        title=title,
                        description=description,
                        submitted_by=submitted_by,
                        content_sha256=photos,
                    )
                    if idempotency_key:
                        IdempotencyRecord.objects.create(
                            client=client, key=idempotency_key, fingerprint=fingerprint, listing=listing
                        )
            except IntegrityError:
                # Two requests raced past the checks above; the unique constraints decide, and the loser is a retry.
                earlier = _earlier_result(client, external_id, photos, idempotency_key, fingerprint)
                if earlier is None:
                    raise
                return Intake(listing=earlier, created=False)
            _store_images(listing, validated, written)
    except BaseException:
        discard_unreferenced(written)
        raise
    listing.refresh_from_db()
    return Intake(listing=listing, created=True)


def add_images(*, listing_id: int, files: Sequence, idempotency_key: str | None = None) -> Intake:
    """Add photos to an existing listing (a seller added some); they are scored like the first ones.

    Raises `ImageValidationError`, `ListingWithdrawn` or `IdempotencyKeyReused`; a repeated request with the same
    `Idempotency-Key` adds nothing and answers as the first one did.
    """
    validated = validate_images(files)
    listing = Listing.objects.get(pk=listing_id)
    fingerprint = request_fingerprint(operation=f"add_images:{listing_id}", fields={}, validated=validated)
    if idempotency_key and _replayed(listing.client, idempotency_key, fingerprint) is not None:
        return Intake(listing=listing, created=False)
    written: list[str] = []
    try:
        with transaction.atomic():
            listing = Listing.objects.select_for_update().get(pk=listing_id)
            if listing.withdrawn_at is not None:
                raise ListingWithdrawn(f"Listing {listing.pk} was withdrawn; it takes no more photos.")
            if idempotency_key:
                try:
                    with transaction.atomic():
                        IdempotencyRecord.objects.create(
                            client=listing.client, key=idempotency_key, fingerprint=fingerprint, listing=listing
                        )
                except IntegrityError:
                    _replayed(listing.client, idempotency_key, fingerprint)
                    return Intake(listing=listing, created=False)
            _store_images(listing, validated, written)
    except BaseException:
        discard_unreferenced(written)
        raise
    listing.refresh_from_db()
    return Intake(listing=listing, created=True)


def _earlier_result(client, external_id, photos, idempotency_key, fingerprint) -> Listing | None:
    """The listing an earlier identical request created, or None; raises if the request conflicts with one."""
    if idempotency_key:
        replayed = _replayed(client, idempotency_key, fingerprint)
        if replayed is not None:
            return replayed
    existing = Listing.objects.filter(client=client, external_id=external_id).first()
    if existing is None:
        return None
    if existing.content_sha256 != photos:
        raise DuplicateListing(existing)
    return existing


def _replayed(client, key: str, fingerprint: str) -> Listing | None:
    record = idempotency_record(client=client, key=key, fingerprint=fingerprint)
    return record.listing if record is not None else None


def idempotency_record(*, client: Client, key: str, fingerprint: str) -> IdempotencyRecord | None:
    """What an earlier request with this `Idempotency-Key` did, or None; raises if that request was another one."""
    record = IdempotencyRecord.objects.filter(client=client, key=key).select_related("listing", "appeal").first()
    if record is None:
        return None
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReused(key)
    return record


def _store_images(listing: Listing, validated: Sequence[ValidatedImage], written: list[str]) -> None:
    """Write the files and rows of `validated` photos (inside the caller's transaction) and queue their scoring."""
    active = active_model()
    now = clock.now()
    to_score, to_match = [], []
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
        save_photo(image, f"{uuid.uuid4().hex}.{item.extension}", item.content, written)
        image.save()
        if not (active and reuse_existing_score(image=image, model_version=active.version)):
            to_score.append(image.pk)
        elif copy_hash(image):
            to_match.append(image.pk)
    refresh_listing_status(listing.pk)
    queue_scoring(image_ids=to_score)
    if to_match:
        outbox.send_on_commit(outbox.MATCH_IMAGES, to_match)


def copy_hash(image: ListingImage) -> bool:
    """Give a photo the PDQ hash of an earlier photo with the same bytes; False when none was hashed yet."""
    earlier = (
        ListingImage.objects.filter(sha256=image.sha256)
        .exclude(pk=image.pk)
        .exclude(pdq_hash="")
        .values(*HASH_FIELDS)
        .first()
    )
    if earlier is None:
        return False
    ListingImage.objects.filter(pk=image.pk).update(**earlier)
    return True


def save_photo(image: ListingImage, name: str, content: bytes, written: list[str]) -> None:
    """Write one photo's file, recording its name in `written` first, so that a partial file is removed too.

    A full disk raises `StorageFull` (507), any other storage error `StorageUnavailable` (503); the caller's
    transaction then rolls back and `discard_unreferenced` deletes what was written, the partial file included.
    """
    path = image.file.field.generate_filename(image, name)
    written.append(path)
    try:
        image.file.save(name, ContentFile(content), save=False)
    except OSError as error:
        if error.errno in NO_ROOM:
            raise StorageFull("The media storage is full; nothing was stored. Try again later.") from error
        detail = f"The media storage failed ({error.strerror or error}); nothing was stored."
        raise StorageUnavailable(detail) from error
    if image.file.name != path:
        written.append(image.file.name)


def _referenced(names: Sequence[str]) -> set[str]:
    return set(ListingImage.objects.filter(file__in=list(names)).values_list("file", flat=True))


def discard_unreferenced(names: Sequence[str]) -> None:
    """After a failed intake: delete the files among `names` that no committed row refers to.

    A failure can come after the commit (a callback, the connection lost while the server committed), and the
    photos of rows that exist must never be deleted. When the database cannot say which rows exist, every file is
    kept: an orphaned file costs disk space, a deleted photo of a stored image loses it.
    """
    if not names:
        return
    try:
        kept = _referenced(names)
    except DatabaseError:
        if connection.in_atomic_block:
            logger.warning("intake failed and the database cannot say which photos are stored; keeping %s", names)
            return
        # The error may have left this connection broken; a new one can still answer.
        connection.close()
        try:
            kept = _referenced(names)
        except DatabaseError as error:
            logger.warning("intake failed; keeping %s: the database cannot say which are stored (%s)", names, error)
            return
    for name in names:
        if name not in kept:
            with contextlib.suppress(OSError):
                default_storage.delete(name)
