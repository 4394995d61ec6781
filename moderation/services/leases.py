"""Scoring leases: which images a task scores, counted before the model runs, and how they are handed back.

The model runs with no transaction open and no row lock held (on SQLite a write transaction is the whole
database's lock), so a row lock can no longer say "a worker is scoring this image". A lease does: the claim names
the task in `scoring_lease_key` and stamps an expiry past the scoring task's time limit, in the same committed
transaction that counts the attempt. Other tasks skip leased images; the same task, redelivered after its process
died, takes its images back at once. A lease never outlives its task by much, so a lost one costs minutes at most.

How an image is handed back says what went wrong:
- `release`: the model never ran on it (the active model went away) and the attempt is given back; or the task
  ran out of time, and the attempt stays, as after a crash. `requeue_skipped` gives back a row found locked.
- `defer`: an infrastructure error (database, lock timeout, unreadable shared file); the attempt is given back and
  the image waits `next_attempt_at`, a delay doubling with each such error up to a cap, before the sweeper queues
  it again. Attempts only count what may be the image's own fault, so infrastructure never makes it `failed`.
- Anything else (a decode error, a process killed mid-batch) keeps the attempt: after `max_scoring_attempts` the
  image is `failed`.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q

from moderation import clock
from moderation.models import ImageStatus, ListingImage
from moderation.services import events
from moderation.services.listings import refresh_listing_status
from moderation.services.queueing import lease_free, not_waiting, queue_scoring

logger = logging.getLogger(__name__)

#: A lease outlives the task's hard time limit by this much, so a running task never loses its images.
LEASE_MARGIN = timedelta(seconds=30)
#: Tries and pauses (seconds) of handing a batch back after a database error: the database may be coming back.
HAND_BACK_PAUSES = (0.5, 2.0)

RELEASED_FIELDS = {"scoring_lease_key": "", "scoring_lease_expires_at": None}


@dataclass
class Claim:
    """The images one call scores now, those it found out of attempts, and those left for another task."""

    batch: list[int]
    failed: list[int]
    leftover: list[int]


def lease_duration() -> timedelta:
    """How long a claim holds its images: past the scoring task's hard time limit."""
    return timedelta(seconds=settings.VIGIA_SCORING_TIME_LIMIT) + LEASE_MARGIN


def eligible(ids: Sequence[int], active_version: str) -> Q:
    """Pending images, and flagged ones named by the task that the active model has not scored yet.

    Images a moderator sent to human review are flagged without a score on purpose and are not scored again.
    """
    rescore = Q(pk__in=list(ids), status=ImageStatus.FLAGGED, sent_to_review_at__isnull=True) & ~Q(
        model_version=active_version
    )
    return Q(status=ImageStatus.PENDING) | rescore


def _by_listing(image: ListingImage) -> tuple[int, int]:
    return image.listing_id, image.pk


def claim_batch(
    *, image_ids: Sequence[int], batch_size: int, max_attempts: int, active_version: str, key: str
) -> Claim:
    """Pick the images to score now, count the attempt and lease them to `key`, committed before any model runs.

    Rows locked by another claim are skipped, not waited for, and so are images another task holds a lease on. An
    image that was attempted before and did not finish may be the one that kills the process, so it is scored
    alone: a poison image then only uses up its own attempts, never its neighbours'.
    """
    ids = list(dict.fromkeys(image_ids))
    now = clock.now()
    free = lease_free(key, now) & not_waiting(now)
    with transaction.atomic():
        locked = ListingImage.objects.select_for_update(skip_locked=True, of=("self",)).select_related("listing")
        own = list(locked.filter(pk__in=ids).filter(eligible(ids, active_version), free).order_by("id"))
        room = max(0, batch_size - len(own))
        others = []
        if room:
            pending = locked.filter(free, status=ImageStatus.PENDING).exclude(pk__in=ids)
            others = list(pending.order_by("enqueued_at", "id")[:room])
        candidates = own + others

        # A flagged image out of attempts keeps the score it has and stays in the queue; a pending one has none.
        exhausted = [image for image in candidates if image.attempts >= max_attempts]
        failing = [image for image in exhausted if image.status == ImageStatus.PENDING]
        for image in sorted(failing, key=_by_listing):
            image.last_error = image.last_error or f"Scoring did not finish after {image.attempts} attempts."
            mark_failed(image, now)
        for listing_id in sorted({image.listing_id for image in failing}):
            refresh_listing_status(listing_id)

        usable = [image for image in candidates if image.attempts < max_attempts]
        retried = [image for image in usable if image.attempts > 0]
        batch = [retried[0]] if retried else usable
        batch_ids = [image.pk for image in batch]
        ListingImage.objects.filter(pk__in=batch_ids).update(
            attempts=F("attempts") + 1, scoring_lease_key=key, scoring_lease_expires_at=now + lease_duration()
        )
        exhausted_ids = {image.pk for image in exhausted}
        leftover = [image.pk for image in own if image.pk not in batch_ids and image.pk not in exhausted_ids]
        # A redelivered task (its child was killed mid-batch) leased more images than it scores now: a retried
        # image is scored alone, and the others of its first claim were not named by its message. Every image it
        # still holds beyond this batch is handed back and queued at once, not left to wait out the lease (whose
        # other messages skipped it) and then the sweeper.
        held_before = (
            ListingImage.objects.filter(scoring_lease_key=key, status=ImageStatus.PENDING)
            .exclude(pk__in=[*batch_ids, *exhausted_ids, *leftover])
            .order_by("id")
            .values_list("pk", flat=True)
        )
        leftover += list(held_before)
        ListingImage.objects.filter(scoring_lease_key=key).exclude(pk__in=batch_ids).update(**RELEASED_FIELDS)
    return Claim(batch=batch_ids, failed=sorted(image.pk for image in failing), leftover=leftover)


def mark_failed(image: ListingImage, now: datetime) -> None:
    """Give up on an image (its `last_error` says why) and tell the marketplace; the caller refreshes the listing."""
    image.status = ImageStatus.FAILED
    image.failed_at = now
    # Nothing retries a failed image by itself: an earlier backoff no longer applies.
    image.next_attempt_at = None
    image.scoring_lease_key, image.scoring_lease_expires_at = "", None
    image.save(update_fields=["status", "failed_at", "last_error", "next_attempt_at", *RELEASED_FIELDS])
    events.image_failed(image=image)


def held_by(key: str, image_ids: Sequence[int]):
    """The images among `image_ids` whose lease `key` still holds (not written, not handed back yet)."""
    return ListingImage.objects.filter(pk__in=list(image_ids), scoring_lease_key=key)


def release(*, image_ids: Sequence[int], key: str, give_back: bool) -> list[int]:
    """End `key`'s lease on these images, giving the attempt back if the model never saw them; returns their ids."""
    with transaction.atomic():
        ids = list(held_by(key, image_ids).select_for_update(of=("self",)).order_by("id").values_list("pk", flat=True))
        if give_back:
            ListingImage.objects.filter(pk__in=ids, attempts__gt=0).update(attempts=F("attempts") - 1)
        ListingImage.objects.filter(pk__in=ids).update(**RELEASED_FIELDS)
    return ids


def backoff(deferrals: int) -> timedelta:
    """The wait before the next attempt after the `deferrals`-th infrastructure error in a row (0 for the first)."""
    base, cap = settings.VIGIA_SCORING_RETRY_SECONDS, settings.VIGIA_SCORING_RETRY_MAX_SECONDS
    return timedelta(seconds=min(cap, base * 2 ** min(deferrals, 20)))


def defer_image(image: ListingImage, reason: str, now: datetime) -> None:
    """Give one locked image its attempt back and make it wait before the sweeper queues it again."""
    image.attempts = max(0, image.attempts - 1)
    image.next_attempt_at = now + backoff(image.deferrals)
    image.deferrals += 1
    image.last_error = reason[:2000]
    image.scoring_lease_key, image.scoring_lease_expires_at = "", None
    image.save(update_fields=["attempts", "next_attempt_at", "deferrals", "last_error", *RELEASED_FIELDS])


def _defer_held(image_ids: Sequence[int], key: str, reason: str) -> list[int]:
    now = clock.now()
    with transaction.atomic():
        images = list(held_by(key, image_ids).select_for_update(of=("self",)).order_by("id"))
        for image in images:
            defer_image(image, reason, now)
    return [image.pk for image in images]


def defer(*, image_ids: Sequence[int], key: str, reason: str) -> list[int]:
    """Hand back the images `key` still holds after an infrastructure error: attempt back, retried after a wait.

    The database may be what failed, so this tries again a few times on a fresh connection. If it never answers,
    the images keep the attempt and the lease, and the sweeper queues them once the lease expires.
    """
    for pause in HAND_BACK_PAUSES:
        try:
            return _defer_held(image_ids, key, reason)
        except DatabaseError:
            time.sleep(pause)
            if not connection.in_atomic_block:
                # A connection the error left broken is dropped, so the next try opens a new one.
                connection.close_if_unusable_or_obsolete()
    try:
        return _defer_held(image_ids, key, reason)
    except DatabaseError as error:
        logger.error("could not hand back images %s after %s: %s", list(image_ids), reason, error)
        return []


def requeue_skipped(*, image_ids: Sequence[int], version: str, key: str) -> list[int]:
    """Queue again the claimed images that the scoring transaction found locked, giving their attempt back.

    Between a task's claim and its write, another worker's claim scan can hold one of its rows for an instant;
    skipping it is right (the write never waits on an image row), but the scan does not score it, so left alone
    the image would wait for the sweeper, minutes away. The rows are locked here without skipping: a transaction
    that really is changing one (a withdrawal, another worker's write) is waited for, after which the image is no
    longer eligible and is not queued. The model's result for them was not written, so the attempt is undone.
    """
    if not image_ids:
        return []
    now = clock.now()
    with transaction.atomic():
        still_due = list(
            ListingImage.objects.select_for_update(of=("self",))
            .filter(pk__in=list(image_ids))
            .filter(eligible(image_ids, version), lease_free(key, now))
            .order_by("id")
            .values_list("pk", flat=True)
        )
        ListingImage.objects.filter(pk__in=still_due, attempts__gt=0).update(attempts=F("attempts") - 1)
        ListingImage.objects.filter(pk__in=still_due).update(**RELEASED_FIELDS)
        queue_scoring(image_ids=still_due)
    return still_due
