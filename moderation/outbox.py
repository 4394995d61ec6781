"""The one place that queues a Celery task: by name, durably, once the transaction that needs it has committed.

Services decide *that* work must happen; tasks do it. Publishing through this module keeps the two apart (services
never import `moderation.tasks`) and gives every publish the same guarantees:

- the task is written as an `OutboxMessage` row in the same transaction as the change that makes it necessary, so a
  rolled-back upload or decision leaves no task behind, and a committed one always leaves its task;
- once the transaction commits, the message is sent to the broker and marked published. If the broker is
  unreachable at that moment, nothing that was committed fails or is undone: the row stays, and the relay
  (`relay_outbox`, run by beat every few seconds) sends it once the broker answers again;
- a message may be sent twice (sent, then the mark failed), never not at all; every task is idempotent.

Tasks are named, not imported, so this module needs nothing from the code that runs them; Celery routes a task to
its queue by name (`CELERY_TASK_ROUTES`).

One kind of task is not durable: `call` runs a task for a request that waits on its answer (scoring one photo for
`POST /api/v1/score` on a scoring worker, so no web process loads a model). Nothing is written for it; a call the
broker or the workers cannot answer in time fails at once, and its message expires rather than making a worker
do work nobody waits for any more.
"""

import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)

SCORE_IMAGES = "moderation.score_images"
MATCH_IMAGES = "moderation.match_images"
APPLY_TAKEDOWN_ENTRIES = "moderation.apply_takedown_entries"
SWEEP_PENDING = "moderation.sweep_pending"
RUN_TRAINING = "moderation.run_training"
EMBED_EXAMPLES = "moderation.embed_examples"
CHECK_TRAINING_TRIGGER = "moderation.check_training_trigger"
SWEEP_TRAINING_RUNS = "moderation.sweep_training_runs"
RELAY_OUTBOX = "moderation.relay_outbox"
RELAY_EVENTS = "moderation.relay_events"
DELIVER_WEBHOOKS = "moderation.deliver_webhooks"
DISPATCH_WEBHOOKS = "moderation.dispatch_webhooks"
SCORE_NOW = "moderation.score_now"

#: The queue of calls someone waits on; every scoring worker consumes it beside `scoring` (`moderation.worker`),
#: so a backlog of uploads to score never holds a call up for longer than one batch.
INTERACTIVE_QUEUE = "interactive"

#: The relay leaves a message this young to the publish its own transaction is about to make.
RELAY_GRACE_SECONDS = 2.0
#: Published messages are kept this long for inspection, then deleted by the relay.
KEEP_PUBLISHED = timedelta(days=1)


def publish(task_name: str, args: Sequence) -> bool:
    """Send one task to the broker now; True when it took it, False (logged) when it could not be reached.

    In eager mode (`CELERY_TASK_ALWAYS_EAGER`, for tests of task bodies) the registered task runs in this process.
    """
    from moderation.celery import app

    try:
        if app.conf.task_always_eager:
            app.tasks[task_name].apply(args=list(args))
        else:
            app.send_task(task_name, args=list(args))
    except Exception as error:  # the row stays; the relay sends it once the broker is back
        logger.warning("could not publish %s%s (%s); the outbox relay will retry", task_name, tuple(args), error)
        return False
    return True


class CallFailed(Exception):
    """A call could not be sent, or no worker answered it within its timeout; the message says which."""


def call(task_name: str, args: Sequence, *, timeout: float) -> Any:
    """Run `task_name(*args)` on a worker and return its result, waiting `timeout` seconds at most.

    Raises `CallFailed` when the broker cannot be reached or no answer comes in time. In eager mode (tests of
    task bodies) the task runs in this process.
    """
    from celery.exceptions import TimeoutError as ResultTimeout

    from moderation.celery import app

    if app.conf.task_always_eager:
        # Task modules are found when a worker starts; a test process may not have imported them yet.
        app.loader.import_default_modules()
        return app.tasks[task_name].apply(args=list(args)).get()
    # Any failure of the broker, the result store or the task itself means the same to the waiting request: no
    # answer. Kombu, redis-py and Celery's result backend each raise their own kinds, so they are caught as one.
    try:
        result = app.send_task(task_name, args=list(args), expires=timeout, ignore_result=False)
    except Exception as error:
        raise CallFailed(f"the workers cannot be reached ({type(error).__name__}: {error})") from error
    try:
        return result.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
    except ResultTimeout:
        raise CallFailed(f"no worker answered within {timeout:g} s") from None
    except Exception as error:
        raise CallFailed(f"the call failed ({type(error).__name__}: {error})") from error
    finally:
        with contextlib.suppress(Exception):
            result.forget()


class _PublishAfterCommit:
    """The on-commit callback of one outbox row; its key lets `send_once_on_commit` spot a duplicate."""

    def __init__(self, message_id: int, task_name: str, args: list):
        self.message_id = message_id
        self.key = (task_name, tuple(args))
        self.task_name, self.args = task_name, args

    def __call__(self) -> None:
        _publish_rows([(self.message_id, self.task_name, self.args)])


def _publish_rows(rows: list[tuple[int, str, list]]) -> int:
    from moderation.models import OutboxMessage

    sent, failed = [], []
    for message_id, task_name, args in rows:
        (sent if publish(task_name, args) else failed).append(message_id)
    if sent:
        OutboxMessage.objects.filter(pk__in=sent, published_at__isnull=True).update(published_at=timezone.now())
    if failed:
        OutboxMessage.objects.filter(pk__in=failed).update(attempts=F("attempts") + 1, last_error="broker unreachable")
    return len(sent)


def send_on_commit(task_name: str, *args) -> None:
    """Publish `task_name(*args)` durably: an outbox row now, sent once the current transaction commits."""
    from moderation.models import OutboxMessage

    message = OutboxMessage.objects.create(task_name=task_name, args=list(args))
    transaction.on_commit(_PublishAfterCommit(message.pk, task_name, list(args)), robust=True)


def send_once_on_commit(task_name: str, *args) -> None:
    """Like `send_on_commit`, unless the same task with the same arguments is already due when this one commits.

    For tasks that do all the work there is whenever they run (the event relay): a transaction that writes a
    hundred events needs it once.
    """
    key = (task_name, tuple(args))
    if any(getattr(callback, "key", None) == key for _ids, callback, _robust in connection.run_on_commit):
        return
    send_on_commit(task_name, *args)


def relay_outbox(*, limit: int = 1000) -> int:
    """Send the messages whose publish failed or never happened (the broker was down); returns how many went out.

    What the beat schedule runs every few seconds. Messages younger than `RELAY_GRACE_SECONDS` are left to their
    own transaction's publish. Published messages older than a day are deleted.
    """
    from moderation.models import OutboxMessage

    # The wall clock, not the desk's: these rows are stamped by the database layer, not by services.
    now = timezone.now()
    due = list(
        OutboxMessage.objects.filter(
            published_at__isnull=True, created_at__lt=now - timedelta(seconds=RELAY_GRACE_SECONDS)
        )
        .order_by("id")
        .values_list("pk", "task_name", "args")[:limit]
    )
    sent = _publish_rows([(pk, name, list(args)) for pk, name, args in due])
    OutboxMessage.objects.filter(published_at__lt=now - KEEP_PUBLISHED).delete()
    return sent
