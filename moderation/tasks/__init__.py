"""Celery tasks, thin: primary keys in, re-read state, call a service. Split by queue."""

from moderation.tasks.scoring import score_images, sweep_pending  # noqa: F401
from moderation.tasks.training import check_training_trigger, run_training, sweep_training_runs  # noqa: F401
