"""Scoring tasks, on the `scoring` queue (routed in settings). Thin: ids in, the service does the work."""

import logging

from celery import shared_task

from moderation import outbox, worker
from moderation.services import queueing, scoring

logger = logging.getLogger(__name__)


@shared_task(name=outbox.SCORE_IMAGES, ignore_result=True)
def score_images(image_ids: list[int]) -> dict:
    """Score these images (and other pending ones, in the same forward pass) with this child's model."""
    outcome = scoring.score_batch(image_ids=image_ids, scorer=worker.get_scorer())
    if outcome.no_model:
        logger.info("no active model: %s images stay pending until one is activated", len(image_ids))
    return {
        "model_version": outcome.model_version,
        "scored": len(outcome.scored),
        "failed": outcome.failed,
        "retry": outcome.retry,
    }


@shared_task(name=outbox.SWEEP_PENDING, ignore_result=True)
def sweep_pending() -> int:
    """Periodic (Celery beat): queue again images that have waited too long, whatever lost their message."""
    queued = queueing.sweep_pending()
    if queued:
        logger.info("sweeper queued %s pending images again", queued)
    return queued
