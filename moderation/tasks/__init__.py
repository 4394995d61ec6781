"""Celery tasks, thin: primary keys in, re-read state, call a service.

Split by queue; published by name through `moderation.outbox`, so nothing else imports them.
"""

from moderation.tasks.events import relay_events, relay_outbox
from moderation.tasks.scoring import apply_takedown_entries, match_images, score_images, sweep_pending
from moderation.tasks.training import check_training_trigger, embed_examples, run_training, sweep_training_runs
from moderation.tasks.webhooks import deliver_webhooks, dispatch_webhooks

__all__ = [
    "apply_takedown_entries",
    "match_images",
    "check_training_trigger",
    "deliver_webhooks",
    "dispatch_webhooks",
    "embed_examples",
    "relay_events",
    "relay_outbox",
    "run_training",
    "score_images",
    "sweep_pending",
    "sweep_training_runs",
]
