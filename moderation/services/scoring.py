"""Score a batch: one forward pass over many images with no transaction open, then one short write.

The database, not the broker, is the source of truth. A task only names some images; `leases.claim_batch` claims
those plus other pending ones (one forward pass for many images is what makes a worker fast), counting the attempt
and leasing them to the task in a committed transaction BEFORE the model runs, so a poison image that kills the
process still uses up its attempts. Then the files are read and the model runs outside any transaction and
without a row lock: on SQLite a write transaction holds the whole database, on PostgreSQL a held row lock stalls
whoever needs the row (a moderator, a withdrawal), and neither should last as long as a forward pass. Last, one
short transaction locks the rows, re-checks that each image is still this task's to score (pending or due a
re-score, and still leased to it: an image withdrawn, decided or scored by another worker meanwhile is left alone)
and writes scores (`routing.write_scores`, the batch at once), routing and events (`routing.record_score`), one
score per image and model version, so a redelivered message never writes twice.

Beside the forward pass, still outside any transaction, each photo gets its PDQ hash and is looked up in this
process's hash banks (`services.bank_index`); the write stores the hash, routes by the score, then lets a bank
match override the routing (`services.matching`); without one, a score at its label's auto-action threshold takes
the photo down (`services.auto_action`); a photo still flagged joins its near-duplicate group (`services.grouping`).

What went wrong decides what an image pays (`leases`): an infrastructure error gives the attempt back and retries
later with backoff; an error of the image itself keeps it, and `max_scoring_attempts` of those make it `failed`.
"""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from classifier.scoring import NoActiveModel
from moderation import clock
from moderation.models import ImageStatus, ListingImage, ModerationSettings
from moderation.selectors.audit import AuditPlan, audit_plan
from moderation.selectors.settings import get_settings
from moderation.services.bank_index import process_index
from moderation.services.grouping import join_groups
from moderation.services.leases import (
    RELEASED_FIELDS,
    claim_batch,
    defer,
    defer_image,
    eligible,
    held_by,
    mark_failed,
    release,
    requeue_skipped,
)
from moderation.services.listings import refresh_listing_status
from moderation.services.matching import HASH_FIELDS, apply_matches, hash_payloads, store_hash
from moderation.services.queueing import queue_scoring
from moderation.services.routing import Rng, auto_act_on_score, record_score, write_scores

logger = logging.getLogger(__name__)

#: How long the write waits for a row lock (PostgreSQL), e.g. on a listing being withdrawn, before it gives up
#: and hands the batch back to be retried later: a stuck lock must not hold a scoring worker.
WRITE_LOCK_TIMEOUT_MS = 5000
#: Errors the forward pass must not mistake for a bad image: no model (wait for one), out of time (hand back).
PASS_THROUGH = (NoActiveModel, SoftTimeLimitExceeded)


@dataclass
class ScoringOutcome:
    """What one call did, for logs and tests."""

    model_version: str = ""
    scored: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)
    no_model: bool = False


@dataclass
class ForwardPass:
    """What the model made of each image, by id: a result, an error of the image's own, or an unreadable file."""

    results: dict[int, tuple[str, dict]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    unreadable: dict[int, str] = field(default_factory=dict)
    payloads: dict[int, bytes] = field(default_factory=dict)
    hashes: dict = field(default_factory=dict)
    hits: dict = field(default_factory=dict)


@dataclass
class Written:
    """What the write transaction did; only returned once it committed."""

    scored: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def _current_version(scorer) -> str | None:
    try:
        scorer.refresh()
        return scorer.version or None
    except NoActiveModel:
        return None


def score_batch(
    *,
    image_ids: Sequence[int],
    scorer,
    batch_size: int | None = None,
    rng: Rng | None = None,
    key: str | None = None,
) -> ScoringOutcome:
    """Score the named images plus other pending ones in one forward pass, and route them.

    `scorer` is a `classifier.scoring.Scorer` (or anything with `refresh`, `version`, `prohibited`, `predict`).
    `key` names the claim (the Celery task id, so a redelivered task takes its own images back); a new one is
    made when none is given. Call it with no transaction open: the forward pass must run outside one.
    """
    outcome = ScoringOutcome()
    version = _current_version(scorer)
    if not version:
        outcome.no_model = True
        return outcome
    outcome.model_version = version
    key = key or uuid.uuid4().hex
    row = get_settings()
    claim = claim_batch(
        image_ids=image_ids,
        batch_size=batch_size or settings.VIGIA_SCORING_BATCH_SIZE,
        max_attempts=row.max_scoring_attempts,
        active_version=version,
        key=key,
    )
    outcome.failed = claim.failed
    if claim.leftover:
        queue_scoring(image_ids=claim.leftover)
        outcome.requeued = claim.leftover
    if not claim.batch:
        return outcome

    try:
        images = list(held_by(key, claim.batch).order_by("id"))
        # The audit plan is one query over recent scores: read once per batch, before the write transaction.
        plan = audit_plan(row)
        forward = _forward_pass(scorer, images)
        _match(forward)
        written = _write(
            batch=claim.batch, key=key, version=version, forward=forward, scorer=scorer, row=row, rng=rng, plan=plan
        )
        outcome.requeued += requeue_skipped(image_ids=written.skipped, version=version, key=key)
    except NoActiveModel:
        # The model went away between the claim and the forward pass: give the attempt back and wait.
        release(image_ids=claim.batch, key=key, give_back=True)
        outcome.no_model = True
        return outcome
    except DatabaseError as error:
        logger.warning("database error while scoring %s; handing the batch back: %s", claim.batch, error)
        outcome.deferred = defer(image_ids=claim.batch, key=key, reason=f"Database error while scoring: {error}")
        return outcome
    except SoftTimeLimitExceeded:
        # Out of time, like a crash: each image keeps its attempt and is tried again alone, without a lease to wait.
        with transaction.atomic():
            queue_scoring(image_ids=release(image_ids=claim.batch, key=key, give_back=False))
        raise
    outcome.scored, outcome.retry, outcome.deferred = written.scored, written.retry, written.deferred
    outcome.failed += written.failed
    return outcome


def _read(image: ListingImage) -> bytes:
    with image.file.open("rb") as handle:
        return handle.read()


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _forward_pass(scorer, images: list[ListingImage]) -> ForwardPass:
    """Read the files and run the model once for the whole batch; on failure, image by image to find the cause.

    An unreadable file (OSError: a shared volume gone, a permission changed) is the storage's fault, not the
    image's; anything the model raises on an image is the image's.
    """
    forward = ForwardPass()
    payloads: dict[int, bytes] = {}
    for image in images:
        try:
            payloads[image.pk] = _read(image)
        except OSError as error:
            forward.unreadable[image.pk] = f"Stored file unreadable: {error}"
    forward.payloads = payloads
    if not payloads:
        return forward
    try:
        prediction = scorer.predict(list(payloads.values()))
    except PASS_THROUGH:
        raise
    except Exception as error:  # fall back to single images to find the one at fault
        if len(payloads) == 1:
            forward.errors[next(iter(payloads))] = _describe(error)
            return forward
        logger.warning("batch of %s failed (%s); scoring one by one", len(payloads), error)
        for pk, data in payloads.items():
            try:
                single = scorer.predict([data])
                forward.results[pk] = (single.model_version, single.probabilities[0])
            except PASS_THROUGH:
                raise
            except Exception as single_error:  # any failure of one image is recorded on that image
                forward.errors[pk] = _describe(single_error)
        return forward
    for pk, probabilities in zip(payloads, prediction.probabilities, strict=True):
        forward.results[pk] = (prediction.model_version, probabilities)
    return forward


def _match(forward: ForwardPass) -> None:
    """Hash what the model scored and look it up in this process's banks: still outside any transaction."""
    scored = {pk: data for pk, data in forward.payloads.items() if pk in forward.results}
    forward.hashes = hash_payloads(scored)
    index = process_index()
    index.refresh()
    forward.hits = index.lookup(forward.hashes)


def _limit_lock_waits() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {int(WRITE_LOCK_TIMEOUT_MS)}")


def _by_listing(image: ListingImage) -> tuple[int, int]:
    return image.listing_id, image.pk


def _write(
    *,
    batch: list[int],
    key: str,
    version: str,
    forward: ForwardPass,
    scorer,
    row: ModerationSettings,
    rng: Rng | None,
    plan: AuditPlan,
) -> Written:
    """Lock the batch's rows, keep those still this task's to score, and write what the forward pass found.

    Rows another transaction holds are skipped, not waited for (`requeue_skipped` deals with them), and rows no
    longer eligible or no longer leased to `key` are left as they are: someone else changed them meanwhile.
    """
    written = Written()
    with transaction.atomic():
        _limit_lock_waits()
        images = list(
            ListingImage.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("listing")
            .filter(eligible(batch, version), pk__in=batch, scoring_lease_key=key)
            .order_by("id")
        )
        mine = {image.pk for image in images}
        written.skipped = [pk for pk in batch if pk not in mine]
        prohibited = list(scorer.prohibited)
        now = clock.now()
        scores = write_scores(
            results={image.pk: forward.results[image.pk] for image in images if image.pk in forward.results},
            prohibited=prohibited,
        )
        # By listing: events lock listing rows, so every worker takes them in one order (no deadlock).
        for image in sorted(images, key=_by_listing):
            if image.pk in forward.results:
                model_version, probabilities = forward.results[image.pk]
                hashed = image.pk in forward.hashes
                if hashed:
                    store_hash(image, forward.hashes[image.pk])
                score = record_score(
                    image=image,
                    model_version=model_version,
                    probabilities=probabilities,
                    prohibited=prohibited,
                    settings_row=row,
                    rng=rng,
                    plan=plan,
                    auto_act=False,
                    score=scores[image.pk],
                    save_also=HASH_FIELDS if hashed else (),
                )
                # A bank match (a person's earlier verdict on a copy) outranks the model's own auto-action.
                if apply_matches(image=image, hits=forward.hits.get(image.pk, [])) is None:
                    auto_act_on_score(image=image, score=score, prohibited=prohibited, settings_row=row, rng=rng)
                written.scored.append(image.pk)
            elif image.pk in forward.unreadable:
                defer_image(image, forward.unreadable[image.pk], now)
                written.deferred.append(image.pk)
            else:
                image.last_error = forward.errors.get(image.pk, "No result from the model.")
                if image.attempts >= row.max_scoring_attempts and image.status == ImageStatus.PENDING:
                    mark_failed(image, now)
                    written.failed.append(image.pk)
                else:
                    image.scoring_lease_key, image.scoring_lease_expires_at = "", None
                    image.save(update_fields=["last_error", *RELEASED_FIELDS])
                    written.retry.append(image.pk)
        join_groups(images=[image for image in images if image.pk in written.scored])
        # Sorted, so two workers updating overlapping listings take the row locks in one order (no deadlock).
        for listing_id in sorted({image.listing_id for image in images}):
            refresh_listing_status(listing_id)
        queue_scoring(image_ids=written.retry)
    return written
