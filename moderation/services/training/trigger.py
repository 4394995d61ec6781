"""The retrain trigger: decisions become examples and advance a locked counter that decides when to retrain.

Crossing the batch size, the schedule or "Retrain now" creates exactly one queued run. Every path that creates a run
holds the `TrainingState` row lock and the database allows one open run (`one_open_training_run`), so concurrent
confirmations crossing the batch size together cannot create two. A run created while another runs stays queued, and
the finishing run dispatches it.
"""

import logging

from django.conf import settings as django_settings
from django.db import IntegrityError, transaction

from moderation.models import (
    AuditAction,
    Decision,
    DecisionOutcome,
    TrainingRun,
    TrainingRunStatus,
    TrainingState,
    TrainingTrigger,
)
from moderation.selectors.settings import get_settings
from moderation.selectors.training import new_example_count
from moderation.services import audit
from moderation.services.examples import ExampleLabelUnknown, deactivate_decision_example, upsert_decision_example
from moderation.services.training.embedding import queue_embedding
from moderation.services.training.runs import dispatch_run

logger = logging.getLogger(__name__)


def _locked_state() -> TrainingState:
    # get_or_create under select_for_update: a concurrent first insert fails on the primary key, and the retry
    # inside get_or_create then waits on the winner's row lock, so every caller ends up holding the same row.
    state, _ = TrainingState.objects.select_for_update().get_or_create(pk=1)
    return state


def record_decision(*, decision: Decision) -> TrainingRun | None:
    """Turn a decision into a training example and advance the retrain trigger (inside the decision's transaction).

    Returns the run this decision triggered, if any. A decision whose label cannot be told is logged and skipped
    rather than refused: the moderator's verdict matters more than one training example.
    """
    try:
        example = upsert_decision_example(decision=decision)
    except ExampleLabelUnknown:
        logger.warning("decision %s produced no training example: no label known", decision.pk)
        return None
    if django_settings.VIGIA_EMBED_DECISIONS:
        queue_embedding(example_ids=[example.pk])
    state = _locked_state()
    state.new_examples_since_last_run += 1
    if decision.outcome == DecisionOutcome.CONFIRM:
        state.confirmed_since_last_run += 1
    run = None
    if state.confirmed_since_last_run >= get_settings().retrain_batch_size:
        run = _create_run(state, TrainingTrigger.BATCH)
    state.save()
    return run


def withdraw_decision(*, decision: Decision) -> None:
    """Deactivate the example an undone decision produced and give back its count (same transaction).

    An automated decision (a bank match) produced neither, so it has nothing to give back.
    """
    if decision.automated:
        return
    changed = deactivate_decision_example(decision=decision)
    state = _locked_state()
    if changed:
        state.new_examples_since_last_run += 1
    counted_since = state.last_run.created_at if state.last_run_id else None
    if (
        decision.outcome == DecisionOutcome.CONFIRM
        and state.confirmed_since_last_run > 0
        and (counted_since is None or decision.created_at >= counted_since)
    ):
        state.confirmed_since_last_run -= 1
    state.save()


def _create_run(state: TrainingState, trigger: str, user=None, dispatch: bool = True) -> TrainingRun:
    """Create the queued run (or return the one already queued) and reset the counter; caller holds the lock.

    A run that is already queued has not started yet, so it will train on everything this trigger wanted too.
    """
    queued = TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).first()
    if queued is None:
        try:
            with transaction.atomic():
                queued = TrainingRun.objects.create(trigger=trigger, requested_by=user)
        except IntegrityError:
            queued = TrainingRun.objects.get(status=TrainingRunStatus.QUEUED)
        else:
            if dispatch:
                dispatch_run(run_id=queued.pk)
    state.confirmed_since_last_run = 0
    state.new_examples_since_last_run = 0
    state.last_run = queued
    return queued


def request_training(*, trigger: str = TrainingTrigger.MANUAL, user=None, dispatch: bool = True) -> TrainingRun:
    """Create a run now (the "Retrain now" button, the `retrain` command), or return the one already queued.

    `dispatch=False` is for a caller that executes the run itself (the `retrain` command), so no worker races it.
    """
    with transaction.atomic():
        state = _locked_state()
        run = _create_run(state, trigger, user, dispatch=dispatch)
        state.save()
        audit.record(action=AuditAction.TRAINING_REQUESTED, obj=run, actor=user, after={"trigger": trigger})
    return run


def check_trigger() -> TrainingRun | None:
    """What the beat schedule runs: retrain when the batch is full, or on schedule when anything is new."""
    settings_row = get_settings()
    with transaction.atomic():
        state = _locked_state()
        if state.confirmed_since_last_run >= settings_row.retrain_batch_size:
            trigger = TrainingTrigger.BATCH
        elif settings_row.retrain_on_schedule and (state.new_examples_since_last_run > 0 or new_example_count() > 0):
            trigger = TrainingTrigger.SCHEDULE
        else:
            return None
        if TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).exists():
            return None
        run = _create_run(state, trigger)
        state.save()
    return run
