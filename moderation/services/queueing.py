"""Queueing images for scoring: on intake, by the sweeper, and again after a new model is activated.

Scoring tasks name images by primary key in chunks of `VIGIA_SCORING_BATCH_SIZE` (one forward pass each) and are
published through the outbox once the transaction that made them due commits. The database says what is due, so
the sweeper can always rebuild what a lost message or a Redis restart dropped.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from moderation import clock, outbox
from moderation.models import ImageStatus, ListingImage
from moderation.selectors.models import active_model


def queue_scoring(*, image_ids: Sequence[int]) -> None:
    """Publish scoring tasks once the current transaction commits; a rollback publishes nothing."""
    ids = list(image_ids)
    size = max(1, settings.VIGIA_SCORING_BATCH_SIZE)
    for start in range(0, len(ids), size):
        outbox.send_on_commit(outbox.SCORE_IMAGES, ids[start : start + size])


def lease_free(key: str | None, now: datetime) -> Q:
    """Images no live scoring task holds (`services.leases`), or held by `key` itself (the same task, redelivered)."""
    free = Q(scoring_lease_expires_at__isnull=True) | Q(scoring_lease_expires_at__lte=now)
    return free | Q(scoring_lease_key=key) if key else free


def not_waiting(now: datetime) -> Q:
    """Images not backing off after an infrastructure error, or whose wait is over."""
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def _mark_enqueued_and_queue(ids: list[int], **extra) -> int:
    if not ids:
        return 0
    with transaction.atomic():
        ListingImage.objects.filter(pk__in=ids).update(enqueued_at=clock.now(), **extra)
        queue_scoring(image_ids=ids)
    return len(ids)


def sweep_pending(*, limit: int = 10_000) -> int:
    """Queue again the images pending longer than VIGIA_PENDING_SWEEP_SECONDS, and those due a retry; how many.

    This is what makes lost messages harmless (a Redis restart without persistence, a publish that failed after
    the commit), what scores the images that waited for a model to be activated, and what retries images handed
    back after an infrastructure error once their `next_attempt_at` has come (flagged ones too: a re-score the
    error interrupted). Images a live scoring task holds are left to it; a dead task's lease runs out first.
    A `failed` image is never swept: retrying it is a moderator's call (a poison image would loop otherwise).
    """
    now = clock.now()
    cutoff = now - timedelta(seconds=settings.VIGIA_PENDING_SWEEP_SECONDS)
    # A lease that ran out means its task died (a child killed, a worker lost with its messages): its images are
    # due at once, however recently they were queued, and the dead lease is cleared so they are queued once.
    lease_expired = Q(scoring_lease_expires_at__lte=now)
    stale = Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True) | lease_expired
    retry_due = Q(next_attempt_at__lte=now) & (Q(enqueued_at__lt=F("next_attempt_at")) | Q(enqueued_at__isnull=True))
    ids = list(
        ListingImage.objects.filter(lease_free(None, now))
        .filter(
            (Q(status=ImageStatus.PENDING) & not_waiting(now) & stale)
            | (Q(status__in=[ImageStatus.PENDING, ImageStatus.FLAGGED]) & retry_due)
        )
        .order_by("enqueued_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    with transaction.atomic():
        dead = ListingImage.objects.filter(lease_expired, pk__in=ids)
        dead.update(scoring_lease_key="", scoring_lease_expires_at=None)
        return _mark_enqueued_and_queue(ids)


def rescore_open_images() -> int:
    """Queue flagged, undecided images for scoring by the active model (after a promotion or rollback).

    Their attempt counters start again: the previous model's attempts say nothing about this one. Those the new
    model puts below the threshold become `cleared`, recorded with the new version. Images a moderator sent to
    human review after scoring failed on them wait for that human, not for another model.
    """
    active = active_model()
    if active is None:
        return 0
    ids = list(
        ListingImage.objects.filter(status=ImageStatus.FLAGGED, sent_to_review_at__isnull=True)
        .exclude(model_version=active.version)
        .order_by("id")
        .values_list("pk", flat=True)
    )
    return _mark_enqueued_and_queue(ids, attempts=0)
