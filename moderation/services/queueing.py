"""Queueing images for scoring: on intake, by the sweeper, and again after a new model is activated.

Scoring tasks name images by primary key in chunks of `VIGIA_SCORING_BATCH_SIZE` (one forward pass each) and are
published through the outbox once the transaction that made them due commits. The database says what is due, so
the sweeper can always rebuild what a lost message or a Redis restart dropped.
"""

from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from moderation import clock, outbox
from moderation.models import ImageStatus, ListingImage
from moderation.selectors.models import active_model


def queue_scoring(*, image_ids: Sequence[int]) -> None:
    """Publish scoring tasks once the current transaction commits; a rollback publishes nothing."""
    ids = list(image_ids)
    size = max(1, settings.VIGIA_SCORING_BATCH_SIZE)
    for start in range(0, len(ids), size):
        outbox.send_on_commit(outbox.SCORE_IMAGES, ids[start : start + size])


def _mark_enqueued_and_queue(ids: list[int], **extra) -> int:
    if not ids:
        return 0
    with transaction.atomic():
        ListingImage.objects.filter(pk__in=ids).update(enqueued_at=clock.now(), **extra)
        queue_scoring(image_ids=ids)
    return len(ids)


def sweep_pending(*, limit: int = 10_000) -> int:
    """Queue again the images pending longer than VIGIA_PENDING_SWEEP_SECONDS; returns how many.

    This is what makes lost messages harmless (a Redis restart without persistence, a publish that failed after
    the commit) and what scores the images that waited for a model to be activated.
    """
    cutoff = clock.now() - timedelta(seconds=settings.VIGIA_PENDING_SWEEP_SECONDS)
    ids = list(
        ListingImage.objects.filter(status=ImageStatus.PENDING)
        .filter(Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True))
        .order_by("enqueued_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    return _mark_enqueued_and_queue(ids)


def rescore_open_images() -> int:
    """Queue flagged, undecided images for scoring by the active model (after a promotion or rollback).

    Their attempt counters start again: the previous model's attempts say nothing about this one. Those the new
    model puts below the threshold become `cleared`, recorded with the new version.
    """
    active = active_model()
    if active is None:
        return 0
    ids = list(
        ListingImage.objects.filter(status=ImageStatus.FLAGGED)
        .exclude(model_version=active.version)
        .order_by("id")
        .values_list("pk", flat=True)
    )
    return _mark_enqueued_and_queue(ids, attempts=0)
