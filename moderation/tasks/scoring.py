"""Scoring tasks, on the `scoring` queue (routed in settings), and the calls of `/api/v1/score` on the `interactive`
queue every scoring worker also consumes. Thin: ids (or the photo) in, the service does the work.

A scoring task is one forward pass and two short transactions, so it has its own time limit
(`VIGIA_SCORING_TIME_LIMIT`, two minutes) rather than the half hour the default allows a retrain: a wedged child
is replaced in minutes, and the leases it held run out soon after.
"""

import base64
import logging

from celery import shared_task
from django.conf import settings

from moderation import outbox, worker
from moderation.services import grouping, queueing, retroaction, score_now, scoring

logger = logging.getLogger(__name__)


@shared_task(
    name=outbox.SCORE_IMAGES,
    ignore_result=True,
    bind=True,
    time_limit=settings.VIGIA_SCORING_TIME_LIMIT,
    soft_time_limit=settings.VIGIA_SCORING_SOFT_TIME_LIMIT,
)
def score_images(self, image_ids: list[int]) -> dict:
    """Score these images (and other pending ones, in the same forward pass) with this child's model.

    The claim is named by the task id, which a redelivered message keeps: a task whose process died takes back
    the images it had leased instead of waiting for the lease to run out.
    """
    outcome = scoring.score_batch(image_ids=image_ids, scorer=worker.get_scorer(), key=self.request.id)
    if outcome.no_model:
        logger.info("no active model: %s images stay pending until one is activated", len(image_ids))
    if outcome.deferred:
        logger.warning("images %s handed back after an infrastructure error; retried later", outcome.deferred)
    return {
        "model_version": outcome.model_version,
        "scored": len(outcome.scored),
        "failed": outcome.failed,
        "retry": outcome.retry,
        "deferred": outcome.deferred,
    }


@shared_task(
    name=outbox.SCORE_NOW,
    ignore_result=False,
    # Nobody waits for a redelivery: the caller has its answer or its 503 long before a lost task would return.
    acks_late=False,
    time_limit=settings.VIGIA_SCORING_TIME_LIMIT,
    soft_time_limit=settings.VIGIA_SCORING_SOFT_TIME_LIMIT,
)
def score_photo(image: str) -> dict:
    """Score one photo (base64) for `POST /api/v1/score` with this child's model; nothing is stored."""
    return score_now.score_photo(content=base64.b64decode(image), scorer=worker.get_scorer())


@shared_task(name=outbox.MATCH_IMAGES, ignore_result=True)
def match_images(image_ids: list[int]) -> list[int]:
    """Match photos that reused an earlier score against this process's banks (scoring queue: the banks are here)."""
    return retroaction.match_stored(image_ids=image_ids)


@shared_task(name=outbox.APPLY_TAKEDOWN_ENTRIES, ignore_result=True)
def apply_takedown_entries() -> int:
    """After entries were added to a take-down bank: take down the live copies they match (default queue)."""
    return retroaction.apply_takedown_entries()


@shared_task(name=outbox.SWEEP_PENDING, ignore_result=True)
def sweep_pending() -> int:
    """Periodic (Celery beat): queue again images that have waited too long, whatever lost their message; and
    give a near-duplicate group whose lead left the queue a new lead, and run the retroactive take-down pass if a
    bank change is past it, should anything have slipped past."""
    grouping.repair_all()
    retroaction.queue_if_behind()
    queued = queueing.sweep_pending()
    if queued:
        logger.info("sweeper queued %s pending images again", queued)
    return queued
