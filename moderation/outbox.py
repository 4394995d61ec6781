"""The one place that queues a Celery task: by name, after the current transaction commits.

Services decide *that* work must happen; tasks do it. Publishing through this module keeps the two apart (services
never import `moderation.tasks`) and gives every publish the same rules:

- a task is sent only once the transaction that made its work necessary has committed, so a rolled-back upload
  or decision never reaches a worker, and a worker never reads a row before it exists;
- a publish that fails (the broker unreachable at that moment) is logged and never undoes or fails what was
  committed: every kind of work has a periodic repair that finds it from the database (the pending-image sweeper,
  the training-run sweeper), because the database, not the broker, is the source of truth.

Tasks are named, not imported, so this module needs nothing from the code that runs them; Celery routes a task to
its queue by name (`CELERY_TASK_ROUTES`).
"""

import logging
from collections.abc import Sequence

from django.db import transaction

logger = logging.getLogger(__name__)

SCORE_IMAGES = "moderation.score_images"
SWEEP_PENDING = "moderation.sweep_pending"
RUN_TRAINING = "moderation.run_training"
EMBED_EXAMPLES = "moderation.embed_examples"
CHECK_TRAINING_TRIGGER = "moderation.check_training_trigger"
SWEEP_TRAINING_RUNS = "moderation.sweep_training_runs"


def publish(task_name: str, args: Sequence) -> bool:
    """Send one task now; True when the broker took it, False (logged) when it could not be reached.

    In eager mode (`CELERY_TASK_ALWAYS_EAGER`, for tests of task bodies) the registered task runs in this process.
    """
    from moderation.celery import app

    try:
        if app.conf.task_always_eager:
            app.tasks[task_name].apply(args=list(args))
        else:
            app.send_task(task_name, args=list(args))
    except Exception:  # the committed work stays; its sweeper publishes it again
        logger.warning("could not publish %s%s; its sweeper will retry", task_name, tuple(args), exc_info=True)
        return False
    return True


def send_on_commit(task_name: str, *args) -> None:
    """Publish `task_name(*args)` once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: publish(task_name, args))
