"""Claim and score: turn a scoring task into one forward pass over many pending images, safely under crashes.

The database, not the broker, is the source of truth. A task only names some images; the service claims those
plus other pending ones (one forward pass for many images is what makes a worker fast), counts the attempt in a
committed transaction BEFORE the model runs (a poison image that kills the process still uses up its attempts),
and writes scores through `routing.record_score`, one per image and model version, so a redelivered message never
writes twice. Images found with nothing to score them (no active model) stay `pending` without spending an
attempt; the periodic sweeper queues them again, which also repairs messages lost with a Redis restart.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from classifier.scoring import NoActiveModel
from moderation import clock
from moderation.models import ImageStatus, ListingImage
from moderation.selectors.audit import audit_plan
from moderation.selectors.settings import get_settings
from moderation.services import events
from moderation.services.listings import refresh_listing_status
from moderation.services.queueing import queue_scoring
from moderation.services.routing import Rng, record_score

logger = logging.getLogger(__name__)


@dataclass
class ScoringOutcome:
    """What one call did, for logs and tests."""

    model_version: str = ""
    scored: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    no_model: bool = False


@dataclass
class Claim:
    """The images one call scores now, those it found out of attempts, and those left for another task."""

    batch: list[int]
    failed: list[int]
    leftover: list[int]


def _by_listing(image: ListingImage) -> tuple[int, int]:
    return image.listing_id, image.pk


def _eligible(ids: Sequence[int], active_version: str) -> Q:
    """Pending images, and flagged ones named by the task that the active model has not scored yet."""
    rescore = Q(pk__in=list(ids), status=ImageStatus.FLAGGED) & ~Q(model_version=active_version)
    return Q(status=ImageStatus.PENDING) | rescore


def claim_batch(*, image_ids: Sequence[int], batch_size: int, max_attempts: int, active_version: str) -> Claim:
    """Pick the images to score now and count the attempt, committed before any model runs.

    Rows locked by another worker are skipped, not waited for. An image that was attempted before and did not
    finish may be the one that kills the process, so it is scored alone: a poison image then only uses up its
    own attempts, never its neighbours'.
    """
    ids = list(dict.fromkeys(image_ids))
    now = clock.now()
    with transaction.atomic():
        locked = ListingImage.objects.select_for_update(skip_locked=True, of=("self",)).select_related("listing")
        own = list(locked.filter(pk__in=ids).filter(_eligible(ids, active_version)).order_by("id"))
        room = max(0, batch_size - len(own))
        others = []
        if room:
            others = list(
                locked.filter(status=ImageStatus.PENDING).exclude(pk__in=ids).order_by("enqueued_at", "id")[:room]
            )
        candidates = own + others

        exhausted = [image for image in candidates if image.attempts >= max_attempts]
        for image in sorted(exhausted, key=_by_listing):
            image.status = ImageStatus.FAILED
            image.failed_at = now
            image.last_error = image.last_error or f"Scoring did not finish after {image.attempts} attempts."
            image.save(update_fields=["status", "failed_at", "last_error"])
            events.image_failed(image=image)
        for listing_id in sorted({image.listing_id for image in exhausted}):
            refresh_listing_status(listing_id)

        usable = [image for image in candidates if image.attempts < max_attempts]
        retried = [image for image in usable if image.attempts > 0]
        batch = [retried[0]] if retried else usable
        batch_ids = [image.pk for image in batch]
        ListingImage.objects.filter(pk__in=batch_ids).update(attempts=F("attempts") + 1)

    exhausted_ids = {image.pk for image in exhausted}
    leftover = [pk for pk in (image.pk for image in own) if pk not in batch_ids and pk not in exhausted_ids]
    return Claim(batch=batch_ids, failed=sorted(exhausted_ids), leftover=leftover)


def _current_version(scorer) -> str | None:
    try:
        scorer.refresh()
        return scorer.version or None
    except NoActiveModel:
        return None


def _read(image: ListingImage) -> bytes:
    with image.file.open("rb") as handle:
        return handle.read()


def _predict_each(scorer, images: list[ListingImage]):
    """Score one by one after a batch failed, to tell the bad image from its neighbours."""
    results, errors = {}, {}
    for image in images:
        try:
            prediction = scorer.predict([_read(image)])
            results[image.pk] = (prediction.model_version, prediction.probabilities[0])
        except NoActiveModel:
            raise
        except Exception as error:  # any failure of one image is recorded on that image
            errors[image.pk] = f"{type(error).__name__}: {error}"
    return results, errors


def score_batch(
    *, image_ids: Sequence[int], scorer, batch_size: int | None = None, rng: Rng | None = None
) -> ScoringOutcome:
    """Score the named images plus other pending ones in one forward pass, and route them.

    `scorer` is a `classifier.scoring.Scorer` (or anything with `refresh`, `version`, `prohibited`, `predict`).
    """
    outcome = ScoringOutcome()
    version = _current_version(scorer)
    if not version:
        outcome.no_model = True
        return outcome
    outcome.model_version = version
    row = get_settings()
    claim = claim_batch(
        image_ids=image_ids,
        batch_size=batch_size or settings.VIGIA_SCORING_BATCH_SIZE,
        max_attempts=row.max_scoring_attempts,
        active_version=version,
    )
    outcome.failed = claim.failed
    if claim.leftover:
        queue_scoring(image_ids=claim.leftover)
        outcome.requeued = claim.leftover
    if not claim.batch:
        return outcome

    # Read before the row locks are taken: the plan is one query over recent scores, not worth holding them for.
    plan = audit_plan(row)
    skipped: list[int] = []
    try:
        with transaction.atomic():
            # Held until the scores are written: other workers skip these rows instead of scoring them twice.
            images = list(
                ListingImage.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("listing")
                .filter(pk__in=claim.batch)
                .filter(_eligible(claim.batch, version))
                .order_by("id")
            )
            locked_ids = {image.pk for image in images}
            skipped = [pk for pk in claim.batch if pk not in locked_ids]
            results, errors = _score(scorer, images)
            prohibited = list(scorer.prohibited)
            now = clock.now()
            retry = []
            # By listing: events lock listing rows, so every worker takes them in one order (no deadlock).
            for image in sorted(images, key=_by_listing):
                if image.pk in results:
                    model_version, probabilities = results[image.pk]
                    record_score(
                        image=image,
                        model_version=model_version,
                        probabilities=probabilities,
                        prohibited=prohibited,
                        settings_row=row,
                        rng=rng,
                        plan=plan,
                    )
                    outcome.scored.append(image.pk)
                    continue
                image.last_error = errors.get(image.pk, "No result from the model.")
                if image.attempts >= row.max_scoring_attempts and image.status == ImageStatus.PENDING:
                    image.status = ImageStatus.FAILED
                    image.failed_at = now
                    outcome.failed.append(image.pk)
                    image.save(update_fields=["status", "failed_at", "last_error"])
                    events.image_failed(image=image)
                else:
                    retry.append(image.pk)
                    image.save(update_fields=["status", "failed_at", "last_error"])
            # Sorted, so two workers updating overlapping listings take the row locks in one order (no deadlock).
            for listing_id in sorted({image.listing_id for image in images}):
                refresh_listing_status(listing_id)
            if retry:
                queue_scoring(image_ids=retry)
                outcome.retry = retry
    except NoActiveModel:
        # The model went away between the claim and the forward pass: give the attempt back and wait.
        ListingImage.objects.filter(pk__in=claim.batch, attempts__gt=0).update(attempts=F("attempts") - 1)
        outcome.no_model = True
        return outcome
    outcome.requeued += requeue_skipped(image_ids=skipped, version=version)
    return outcome


def requeue_skipped(*, image_ids: Sequence[int], version: str) -> list[int]:
    """Queue again the claimed images that the scoring transaction found locked, giving their attempt back.

    Between a task's claim and its forward pass, another worker's claim scan can hold one of its rows for an
    instant; skipping it is right (no row is ever waited for while a model runs), but the scan does not score
    it, so left alone the image would wait for the sweeper, minutes away. The rows are locked here without
    skipping: a worker that really is scoring one is waited for, after which the image is no longer eligible
    and is not queued twice. The model never saw these images, so the attempt counted at the claim is undone.
    """
    if not image_ids:
        return []
    with transaction.atomic():
        still_due = list(
            ListingImage.objects.select_for_update(of=("self",))
            .filter(pk__in=list(image_ids))
            .filter(_eligible(image_ids, version))
            .order_by("id")
            .values_list("pk", flat=True)
        )
        ListingImage.objects.filter(pk__in=still_due, attempts__gt=0).update(attempts=F("attempts") - 1)
        queue_scoring(image_ids=still_due)
    return still_due


def _score(scorer, images: list[ListingImage]):
    """One forward pass for the whole batch; on failure, one image at a time to isolate the cause."""
    if not images:
        return {}, {}
    payloads, unreadable = [], {}
    readable = []
    for image in images:
        try:
            payloads.append(_read(image))
            readable.append(image)
        except OSError as error:
            unreadable[image.pk] = f"Stored file unreadable: {error}"
    if not readable:
        return {}, unreadable
    try:
        prediction = scorer.predict(payloads)
    except NoActiveModel:
        raise
    except Exception as error:  # fall back to single images to find the one at fault
        if len(readable) == 1:
            return {}, {readable[0].pk: f"{type(error).__name__}: {error}", **unreadable}
        logger.warning("batch of %s failed (%s); scoring one by one", len(readable), error)
        results, errors = _predict_each(scorer, readable)
        return results, {**errors, **unreadable}
    results = {
        image.pk: (prediction.model_version, probabilities)
        for image, probabilities in zip(readable, prediction.probabilities, strict=True)
    }
    return results, unreadable
