"""A training run's lifecycle: dispatch, start under its row lock, heartbeat and progress, one retrain, its end.

`execute_training_run` trains on every active non-holdout example, saves the candidate in the registry, compares it
with the active model on the frozen holdout (`gate`), and promotes it only when it is at least as good; the active
model is only ever changed by that last transaction, so a failure anywhere earlier changes nothing that serves.

Only one run is ever running: a run created while another runs stays queued, and the finishing run dispatches it.
A heartbeat thread stamps the running run every few seconds; it stops exactly when the worker process dies, however
it died, and the sweeper then fails the run. A queued run whose message was lost is dispatched again.
"""

import logging
import os
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings as django_settings
from django.db import IntegrityError, close_old_connections, connection, transaction

from moderation import clock, outbox
from moderation.models import TrainingRun, TrainingRunStatus
from moderation.selectors.models import active_model
from moderation.selectors.settings import get_settings
from moderation.selectors.training import trainable_examples
from moderation.services.calibration import store_holdout_scores, store_training_scores
from moderation.services.model_versions import activate_version, get_registry, mirror_version
from moderation.services.training.dataset import labels_for_run, mean_one, weighted_examples
from moderation.services.training.embedding import feature_extractor
from moderation.services.training.gate import evaluate_gate
from moderation.services.training.groups import grouped_examples, keep_holdout_apart
from moderation.services.training.hparams import hparams_for

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.5


def dispatch_run(*, run_id: int) -> None:
    """Queue the task for a run once the transaction commits; duplicates are harmless (a run starts at most once)."""
    outbox.send_on_commit(outbox.RUN_TRAINING, run_id)


def dispatch_next_run() -> None:
    """Dispatch the queued run, if any, unless one is running (it dispatches the next when it ends)."""
    queued = TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).first()
    if queued is not None and not TrainingRun.objects.filter(status=TrainingRunStatus.RUNNING).exists():
        dispatch_run(run_id=queued.pk)


class _ProgressWriter:
    """The classifier's progress callback: writes phase and progress to the run row, at most every 0.5 s.

    A phase change and the last step of a phase are always written, so the page never shows a stale phase.
    """

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.last_write = 0.0
        self.last_phase = None

    def __call__(self, phase: str, current: int, total: int) -> None:
        now = time.monotonic()
        if phase == self.last_phase and current < total and now - self.last_write < PROGRESS_INTERVAL_SECONDS:
            return
        self.last_write = now
        self.last_phase = phase
        TrainingRun.objects.filter(pk=self.run_id).update(
            phase=phase, progress_current=max(0, current), progress_total=max(0, total), heartbeat_at=clock.now()
        )


class _Heartbeat(threading.Thread):
    """Stamps `heartbeat_at` every few seconds while the run's process is alive, whatever phase it is in."""

    def __init__(self, run_id: int, interval: float):
        super().__init__(name=f"training-heartbeat-{run_id}", daemon=True)
        self.run_id = run_id
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        """Stamp the heartbeat until stopped, while the run is still running; never raise into the run."""
        try:
            while not self.stopped.wait(self.interval):
                TrainingRun.objects.filter(pk=self.run_id, status=TrainingRunStatus.RUNNING).update(
                    heartbeat_at=clock.now()
                )
        except Exception:  # a heartbeat must never take the run down; a missing beat shows up as staleness
            logger.exception("training heartbeat of run %s stopped", self.run_id)
        finally:
            connection.close()

    def stop(self) -> None:
        """Stop beating and wait briefly for the thread, so it closes its own database connection."""
        self.stopped.set()
        self.join(timeout=self.interval + 5)


def _start_run(run_id: int, task_id: str) -> TrainingRun | None:
    """Flip a queued run to running, or say why not (None). Runs under the run's row lock.

    A run found `running` under the same task id is a redelivery: the worker that started it died (acks_late with
    reject-on-worker-lost hands the message back), so it ends `failed` and the active model stays untouched.
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return None
        if run.status == TrainingRunStatus.RUNNING:
            if run.metrics.get("worker", {}).get("task_id") == task_id:
                _mark_failed(run, "The worker running this training was lost (killed or crashed) before it finished.")
                transaction.on_commit(dispatch_next_run)
            return None
        if run.status != TrainingRunStatus.QUEUED:
            return None
        if TrainingRun.objects.filter(status=TrainingRunStatus.RUNNING).exists():
            return None  # the running one dispatches this run when it ends
        now = clock.now()
        run.status = TrainingRunStatus.RUNNING
        run.started_at = now
        run.heartbeat_at = now
        run.phase = "starting"
        run.metrics = {"worker": {"task_id": task_id, "pid": os.getpid()}}
        try:
            with transaction.atomic():
                run.save(update_fields=["status", "started_at", "heartbeat_at", "phase", "metrics"])
        except IntegrityError:
            return None
    return run


def _mark_failed(run: TrainingRun, reason: str) -> None:
    run.status = TrainingRunStatus.FAILED
    run.reason = reason[:5000]
    run.finished_at = clock.now()
    run.save(update_fields=["status", "reason", "finished_at"])


def _finish_failed(run_id: int, reason: str) -> bool:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id, status=TrainingRunStatus.RUNNING).first()
        if run is None:
            return False
        _mark_failed(run, reason)
        transaction.on_commit(dispatch_next_run)
    return True


def execute_training_run(*, run_id: int, task_id: str | None = None) -> TrainingRun:
    """Run one queued training end to end: train, save the candidate, gate it, promote or reject.

    Any exception ends the run `failed` with the reason. The task id tells a redelivery (the worker died) from a
    duplicate message; a caller without one (the `retrain` command) gets a fresh id.
    """
    task_id = task_id or f"sync-{uuid.uuid4()}"
    run = _start_run(run_id, task_id)
    if run is None:
        return TrainingRun.objects.get(pk=run_id)
    heartbeat = _Heartbeat(run_id, django_settings.VIGIA_TRAINING_HEARTBEAT_SECONDS)
    heartbeat.start()
    try:
        _train_and_gate(run)
    except Exception as exc:
        logger.exception("training run %s failed", run_id)
        _finish_failed(run_id, f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop()
        close_old_connections()
    dispatch_next_run()
    return TrainingRun.objects.get(pk=run_id)


def sweep_training_runs() -> dict:
    """Fail runs whose worker stopped beating, and re-dispatch a queued run nothing is working on."""
    cutoff = clock.now() - timedelta(seconds=django_settings.VIGIA_TRAINING_STALE_SECONDS)
    failed = 0
    for run in TrainingRun.objects.filter(status=TrainingRunStatus.RUNNING, heartbeat_at__lt=cutoff):
        if _finish_failed(run.pk, f"No heartbeat since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC: the worker was lost."):
            failed += 1
    redispatched = 0
    if not TrainingRun.objects.filter(status=TrainingRunStatus.RUNNING).exists():
        queued = TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).first()
        if queued is not None:
            dispatch_run(run_id=queued.pk)
            redispatched = 1
    return {"failed": failed, "redispatched": redispatched}


def _train_and_gate(run: TrainingRun) -> None:
    """The retrain itself: examples, `train_model`, save, gate, then promote or reject in one transaction."""
    from classifier.training import train_model

    settings_row = get_settings()
    active = active_model()
    labels, prohibited = labels_for_run(active=active, settings_row=settings_row)
    moved = keep_holdout_apart()
    if moved:
        logger.info("moved %s holdout examples with a near-duplicate in training into training", moved)
    rows = trainable_examples().filter(label__in=labels)
    new_ids = list(rows.filter(used_in_run__isnull=True).values_list("id", flat=True))
    ordered = list(rows.order_by("id"))
    # Copies of one picture weigh a share of it, in training and in the out-of-sample scores calibration counts.
    grouped = grouped_examples(weighted_examples(ordered), ordered)
    examples = mean_one(grouped)
    TrainingRun.objects.filter(pk=run.pk).update(
        new_examples=len(new_ids), total_examples=len(examples), phase="embedding", heartbeat_at=clock.now()
    )
    progress = _ProgressWriter(run.pk)
    result = train_model(
        examples,
        labels,
        prohibited,
        hparams=hparams_for(active=active),
        cache_dir=django_settings.VIGIA_FEATURE_CACHE,
        progress=progress,
        backbone_cache=django_settings.VIGIA_BACKBONE_CACHE,
        extractor=feature_extractor(active=active),
    )
    progress("saving", 0, 1)
    registry = get_registry()
    version = registry.save(
        result,
        metadata={"training_run": run.pk, "trigger": run.trigger, "new_examples": len(new_ids), "total": len(examples)},
    )
    info = next(item for item in registry.versions() if item.version == version)
    progress("gate", 0, 1)
    verdict = evaluate_gate(
        registry=registry,
        version=version,
        active_version=active.version if active else None,
        labels=labels,
        prohibited=prohibited,
        settings_row=settings_row,
    )
    metrics = dict(result.metrics)
    metrics["worker"] = run.metrics.get("worker", {})
    metrics["embedded"] = result.embedded
    metrics["cached"] = result.cached
    metrics["skipped"] = len(result.skipped)
    metrics["seconds"] = round(float(result.seconds), 3)
    metrics["embedding_runtime"] = result.embedding_runtime

    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != TrainingRunStatus.RUNNING:
            # The sweeper gave up on this run while it was still working: its verdict stands, nothing is promoted.
            return
        mirror_version(info=info, training_run=locked)
        store_holdout_scores(version=version, outcomes=verdict.candidate_outcomes, labels_by_key=verdict.labels_by_key)
        store_training_scores(version=version, result=result, examples=grouped)
        trainable_examples().filter(id__in=new_ids, used_in_run__isnull=True).update(used_in_run=locked)
        locked.status = TrainingRunStatus.SUCCEEDED if verdict.promote else TrainingRunStatus.REJECTED
        locked.reason = verdict.reason
        locked.metrics = metrics
        locked.gate = verdict.as_dict()
        locked.model_version = version
        locked.phase = "done"
        locked.progress_current = locked.progress_total = 1
        locked.finished_at = clock.now()
        locked.save()
        if verdict.promote:
            activate_version(version=version, note=f"Promoted by the gate (training run {run.pk}): {verdict.reason}")
