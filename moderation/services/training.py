"""The learning loop: decisions become examples, the trigger queues exactly one run, a run trains and is gated.

Flow: `record_decision` (inside the review transaction) writes the example and advances the counter on the
locked `TrainingState` row; crossing the batch size creates one `TrainingRun` and queues `moderation.run_training`
on commit. `execute_training_run` trains on every active non-holdout example, saves the candidate in the registry,
compares it with the active model on the frozen holdout, and promotes it only when it is at least as good.

Only one run is ever running: a run created while another runs stays queued, and the finishing run dispatches
it. Every path that creates a run holds the `TrainingState` lock, so concurrent triggers cannot create two.
"""

import logging
import math
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta

from django.conf import settings as django_settings
from django.db import IntegrityError, close_old_connections, connection, transaction

from moderation import clock
from moderation.models import (
    Decision,
    DecisionOutcome,
    GateMetric,
    ModelVersion,
    ModerationSettings,
    TrainingExample,
    TrainingRun,
    TrainingRunStatus,
    TrainingState,
    TrainingTrigger,
)
from moderation.selectors.settings import get_settings
from moderation.selectors.training import (
    gate_threshold,
    holdout_examples,
    label_counts,
    new_example_count,
    to_classifier_examples_from_rows,
    trainable_examples,
)
from moderation.services.examples import ExampleLabelUnknown, deactivate_decision_example, upsert_decision_example
from moderation.services.model_versions import activate_version, get_registry, mirror_version

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.5

#: Hyper-parameters every platform retrain uses whatever the active version was trained with (the first model
#: usually comes from the command line). Decisions carry inverse-propensity weights: a flagged image weighs 1,
#: an audit item 1 / the audit rate. Put into the loss, a few heavy audit items steer every feature weight and
#: retrains swing from one candidate to the next; with "bias" the head learns from the decisions as they are
#: and only its output biases are refit with the weights, which is what corrects the flagged images' skew
#: (docs/learning-loop.md has the measurements). The frozen holdout is what judges a candidate, so the test
#: split only feeds the version page's figures and a small holdout's extension: 10% of the examples, not the
#: command line's 30%, leaves more decisions to learn from. The biases are refit on out-of-fold scores (5 folds):
#: a head fits the audit items it trained on, so refit on its own training rows it kept the boundary too high
#: and missed prohibited images (measured in docs/learning-loop.md). The same folds choose the L2 strength from
#: `l2_grid` while a retrain has under 2,000 training images: decisions over-represent the hard negatives, and
#: cross-validation on them prefers more shrinkage than the classifier's default, which was chosen on random
#: photos. The five fold heads are then averaged into the final head (bagging): trained on a few hundred
#: decisions, one head's ranking and operating point swing between retrains, and the average swings less.
#: `VIGIA_TRAINING_HPARAMS` overrides any of these.
PLATFORM_TRAINING_HPARAMS = {
    "example_weighting": "bias",
    "bias_folds": 5,
    "l2_grid": (0.01, 0.03, 0.1),
    "average_fold_heads": True,
    "test_share": 0.1,
}
GATE_METRIC_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "auc",
    "n",
    "weighted_n",
    "confusion_matrix",
    "labels",
)


def heartbeat_seconds() -> float:
    return float(getattr(django_settings, "VIGIA_TRAINING_HEARTBEAT_SECONDS", 5))


def stale_after_seconds() -> float:
    return float(getattr(django_settings, "VIGIA_TRAINING_STALE_SECONDS", 120))


# --- Decisions -> examples -> trigger -------------------------------------------------------------------------


def _locked_state() -> TrainingState:
    # get_or_create under select_for_update: a concurrent first insert fails on the primary key, and the retry
    # inside get_or_create then waits on the winner's row lock, so every caller ends up holding the same row.
    state, _ = TrainingState.objects.select_for_update().get_or_create(pk=1)
    return state


def record_decision(decision: Decision) -> TrainingRun | None:
    """Turn a decision into a training example and advance the retrain trigger (inside the decision's transaction).

    Returns the run this decision triggered, if any. A decision whose label cannot be told is logged and skipped
    rather than refused: the moderator's verdict matters more than one training example.
    """
    try:
        example = upsert_decision_example(decision)
    except ExampleLabelUnknown:
        logger.warning("decision %s produced no training example: no label known", decision.pk)
        return None
    if django_settings.VIGIA_EMBED_DECISIONS:
        example_id = example.pk
        transaction.on_commit(lambda: dispatch_embedding([example_id]))
    state = _locked_state()
    state.new_examples_since_last_run += 1
    if decision.outcome == DecisionOutcome.CONFIRM:
        state.confirmed_since_last_run += 1
    run = None
    if state.confirmed_since_last_run >= get_settings().retrain_batch_size:
        run = _create_run(state, TrainingTrigger.BATCH)
    state.save()
    return run


def withdraw_decision(decision: Decision) -> None:
    """Deactivate the example an undone decision produced and give back its count (same transaction)."""
    changed = deactivate_decision_example(decision)
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
                run_id = queued.pk
                transaction.on_commit(lambda: dispatch_run(run_id))
    state.confirmed_since_last_run = 0
    state.new_examples_since_last_run = 0
    state.last_run = queued
    return queued


def dispatch_run(run_id: int) -> None:
    """Queue the task for a run; duplicates are harmless (the task starts a run at most once)."""
    from moderation.tasks.training import run_training

    run_training.delay(run_id)


def dispatch_embedding(example_ids: list[int]) -> None:
    """Queue the embedding of decided images on the training queue (after the decision commits)."""
    from moderation.tasks.training import embed_examples

    try:
        embed_examples.delay(example_ids)
    except Exception:  # the decision stands; the retrain embeds what was not embedded ahead of it
        logger.warning("could not queue the embedding of examples %s", example_ids, exc_info=True)


def embed_decision_examples(example_ids: list[int]) -> dict:
    """Put decided images' backbone features in the shared cache now, so the next retrain finds them there.

    Embedding new images is most of a retrain's time. Done as each decision is recorded, on the training queue,
    it is spent while moderators work instead of between the trigger and the promoted model. The features are
    the ones the next retrain will ask for: the active version's hyper-parameters with the platform's
    overrides. Training examples also get their mirror image's features when the stable split puts them in
    training; holdout images only ever get scored, by the gate. Rows that are gone, inactive or whose file is
    missing are skipped; an image the backbone cannot decode is left for the retrain to report.
    """
    from classifier.training import embed_examples

    rows = list(TrainingExample.objects.filter(id__in=example_ids, active=True))
    hparams = _hparams_for(ModelVersion.objects.filter(is_active=True).first())
    cache_dir = django_settings.VIGIA_FEATURE_CACHE
    report = {"embedded": 0, "cached": 0, "skipped": 0}
    for holdout in (False, True):
        examples = to_classifier_examples_from_rows(row for row in rows if row.is_holdout == holdout)
        result = embed_examples(examples, hparams, cache_dir=cache_dir, for_training=not holdout)
        report["embedded"] += result.embedded
        report["cached"] += result.cached
        report["skipped"] += len(result.skipped)
    return report


def request_training(trigger: str = TrainingTrigger.MANUAL, user=None, dispatch: bool = True) -> TrainingRun:
    """Create a run now (the "Retrain now" button, the `retrain` command), or return the one already queued.

    `dispatch=False` is for a caller that executes the run itself (the `retrain` command), so no worker races it.
    """
    with transaction.atomic():
        state = _locked_state()
        run = _create_run(state, trigger, user, dispatch=dispatch)
        state.save()
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


def sweep_training_runs() -> dict:
    """Fail runs whose worker stopped beating, and re-dispatch a queued run nothing is working on.

    The heartbeat is written by a thread next to the training, so it stops exactly when the worker process dies,
    however it died. A queued run whose message was lost (Redis restarted) is dispatched again.
    """
    cutoff = clock.now() - timedelta(seconds=stale_after_seconds())
    failed = 0
    for run in TrainingRun.objects.filter(status=TrainingRunStatus.RUNNING, heartbeat_at__lt=cutoff):
        if _finish_failed(run.pk, f"No heartbeat since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC: the worker was lost."):
            failed += 1
    redispatched = 0
    if not TrainingRun.objects.filter(status=TrainingRunStatus.RUNNING).exists():
        queued = TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).first()
        if queued is not None:
            dispatch_run(queued.pk)
            redispatched = 1
    return {"failed": failed, "redispatched": redispatched}


SCHEDULES = {
    "Vigia: retrain on schedule": ("moderation.check_training_trigger", {"crontab": {"minute": "0", "hour": "3"}}),
    "Vigia: sweep training runs": ("moderation.sweep_training_runs", {"interval": {"every": 60, "period": "seconds"}}),
}


def ensure_training_schedules() -> int:
    """Create the beat rows for the trigger check and the sweeper, leaving rows an admin already edited alone."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    created = 0
    for name, (task, schedule) in SCHEDULES.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        if "crontab" in schedule:
            crontab, _ = CrontabSchedule.objects.get_or_create(**schedule["crontab"], timezone="UTC")
            PeriodicTask.objects.create(name=name, task=task, crontab=crontab)
        else:
            interval, _ = IntervalSchedule.objects.get_or_create(**schedule["interval"])
            PeriodicTask.objects.create(name=name, task=task, interval=interval)
        created += 1
    return created


# --- The run ----------------------------------------------------------------------------------------------------


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
        run.metrics = {"worker": {"task_id": task_id, "pid": _pid()}}
        try:
            with transaction.atomic():
                run.save(update_fields=["status", "started_at", "heartbeat_at", "phase", "metrics"])
        except IntegrityError:
            return None
    return run


def _pid() -> int:
    import os

    return os.getpid()


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


def dispatch_next_run() -> None:
    queued = TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).first()
    if queued is not None and not TrainingRun.objects.filter(status=TrainingRunStatus.RUNNING).exists():
        dispatch_run(queued.pk)


def execute_training_run(run_id: int, task_id: str | None = None) -> TrainingRun:
    """Run one queued training end to end: train, save the candidate, gate it, promote or reject.

    Any exception ends the run `failed` with the reason; the active model is only ever changed by the final
    promotion transaction, so a failure at any earlier point changes nothing that serves.
    """
    task_id = task_id or f"sync-{uuid.uuid4()}"
    run = _start_run(run_id, task_id)
    if run is None:
        return TrainingRun.objects.get(pk=run_id)
    heartbeat = _Heartbeat(run_id, heartbeat_seconds())
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


def weighted_examples(rows) -> list:
    """Rows as classifier examples carrying their inverse-propensity weights (missing files are skipped).

    Training and the gate both use the weights, so the model learns from, and is judged on, an estimate of the
    whole stream rather than the flagged images plus a thin audit sample.
    """
    rows = list(rows)
    weight_of = {row.sha256: float(row.weight) for row in rows}
    return [replace(example, weight=weight_of[example.sha256]) for example in to_classifier_examples_from_rows(rows)]


def _mean_one(examples: list) -> list:
    """The same weights scaled to average 1, for training.

    Only their ratios matter to what is learned, and at mean 1 the weighted loss keeps the scale the classifier's
    learning rate was chosen for; heavy audit items would otherwise raise the effective step size with the
    audit share.
    """
    total = sum(example.weight for example in examples)
    if not examples or total <= 0:
        return examples
    scale = len(examples) / total
    return [replace(example, weight=example.weight * scale) for example in examples]


def _labels_for_run(active: ModelVersion | None, settings_row: ModerationSettings) -> tuple[list[str], list[str]]:
    """The label set keeps the active model's; the very first model takes the examples' labels."""
    if active is not None:
        return list(active.labels), list(active.prohibited_labels)
    labels = sorted(set(trainable_examples().values_list("label", flat=True)))
    prohibited = [label for label in labels if label in settings_row.thresholds]
    if not prohibited:
        raise ValueError(
            "No prohibited label is known: give one a threshold in the settings, or import with --prohibited."
        )
    return labels, prohibited


def _hparams_for(active: ModelVersion | None):
    """The active version's hyper-parameters on the configured backbone (plus any `VIGIA_TRAINING_HPARAMS`)."""
    import json

    from classifier.hparams import HParams

    hparams = HParams()
    if active is not None:
        info = next((item for item in get_registry().versions() if item.version == active.version), None)
        hparams_file = info.path / "hparams.json" if info is not None else None
        if hparams_file is not None and hparams_file.exists():
            hparams = HParams.from_dict(json.loads(hparams_file.read_text()))
    overrides = {"backbone": django_settings.VIGIA_BACKBONE, **PLATFORM_TRAINING_HPARAMS}
    if django_settings.VIGIA_BACKBONE_WEIGHTS:
        overrides["backbone_weights"] = django_settings.VIGIA_BACKBONE_WEIGHTS
    overrides.update(getattr(django_settings, "VIGIA_TRAINING_HPARAMS", {}) or {})
    return replace(hparams, **overrides)


def _train_and_gate(run: TrainingRun) -> None:
    from classifier.training import train_model

    settings_row = get_settings()
    active = ModelVersion.objects.filter(is_active=True).first()
    labels, prohibited = _labels_for_run(active, settings_row)
    rows = trainable_examples().filter(label__in=labels)
    new_ids = list(rows.filter(used_in_run__isnull=True).values_list("id", flat=True))
    examples = _mean_one(weighted_examples(rows.order_by("id")))
    TrainingRun.objects.filter(pk=run.pk).update(
        new_examples=len(new_ids), total_examples=len(examples), phase="embedding", heartbeat_at=clock.now()
    )
    progress = _ProgressWriter(run.pk)
    result = train_model(
        examples,
        labels,
        prohibited,
        hparams=_hparams_for(active),
        cache_dir=django_settings.VIGIA_FEATURE_CACHE,
        progress=progress,
    )
    progress("saving", 0, 1)
    registry = get_registry()
    version = registry.save(
        result,
        metadata={"training_run": run.pk, "trigger": run.trigger, "new_examples": len(new_ids), "total": len(examples)},
    )
    info = next(item for item in registry.versions() if item.version == version)
    progress("gate", 0, 1)
    gate = evaluate_gate(registry, version, active.version if active else None, labels, prohibited, settings_row)
    metrics = dict(result.metrics)
    metrics["worker"] = run.metrics.get("worker", {})
    metrics["embedded"] = result.embedded
    metrics["cached"] = result.cached
    metrics["skipped"] = len(result.skipped)
    metrics["seconds"] = round(float(result.seconds), 3)

    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != TrainingRunStatus.RUNNING:
            # The sweeper gave up on this run while it was still working: its verdict stands, nothing is promoted.
            return
        mirror_version(info, training_run=locked)
        trainable_examples().filter(id__in=new_ids, used_in_run__isnull=True).update(used_in_run=locked)
        locked.status = TrainingRunStatus.SUCCEEDED if gate["promote"] else TrainingRunStatus.REJECTED
        locked.reason = gate["reason"]
        locked.metrics = metrics
        locked.gate = gate
        locked.model_version = version
        locked.phase = "done"
        locked.progress_current = locked.progress_total = 1
        locked.finished_at = clock.now()
        locked.save()
        if gate["promote"]:
            activate_version(version)


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _summary(metrics: dict) -> dict:
    return {key: _clean(metrics.get(key)) for key in GATE_METRIC_KEYS if key in metrics}


def paired_changes(active: dict, candidate: dict, resamples: int = 1000, seed: int = 0) -> dict | None:
    """Weighted recall, precision and ROC AUC changes from the active model to the candidate, with their noise.

    Both models scored the same holdout images, so the comparison is paired: the holdout is resampled with
    replacement (a bootstrap, ``resamples`` times, seeded so a verdict can be repeated) and both models' figures
    are recomputed on each resample. Returns ``{"recall": (change, standard error), "precision": ...,
    "auc": ...}``, each change from the whole holdout and its error from the spread over resamples; a change is
    None when undefined (nothing prohibited, or nothing flagged). None when the outcomes are not of the same
    images.
    """
    import numpy as np

    from classifier.metrics import weighted_roc_auc

    if active.get("keys") != candidate.get("keys") or not active.get("keys"):
        return None
    weights = np.asarray(active["weights"], dtype=np.float64)
    truth = np.asarray(active["prohibited"], dtype=bool)
    was = np.asarray(active["flagged"], dtype=bool)
    now = np.asarray(candidate["flagged"], dtype=bool)

    def figures(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # w: (k, n) weights per resample; returns recall and precision changes per resample (nan if undefined).
        with np.errstate(invalid="ignore", divide="ignore"):
            positives = w @ truth
            recall = ((w @ (truth & now)) - (w @ (truth & was))) / positives
            precision = (w @ (truth & now)) / (w @ now) - (w @ (truth & was)) / (w @ was)
        return recall, precision

    def auc_change(w: np.ndarray) -> float:
        before = weighted_roc_auc(truth, active["scores"], w)
        after = weighted_roc_auc(truth, candidate["scores"], w)
        return np.nan if before is None or after is None else after - before

    recall, precision = figures(weights[None, :])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(weights), np.full(len(weights), 1 / len(weights)), size=resamples)
    resampled = counts * weights[None, :]
    spread_recall, spread_precision = figures(resampled)
    spread_auc = np.array([auc_change(row) for row in resampled])

    def pair(point: float, spread: np.ndarray):
        finite = spread[np.isfinite(spread)]
        if not np.isfinite(point):
            return None
        return float(point), float(finite.std()) if len(finite) > 1 else 0.0

    return {
        "recall": pair(recall[0], spread_recall),
        "precision": pair(precision[0], spread_precision),
        "auc": pair(auc_change(weights), spread_auc),
    }


def compare_on_gate(
    candidate: dict,
    active: dict,
    metric: str,
    margin: float,
    recall_allowance: float = 0.0,
    auc_allowance: float | None = None,
) -> tuple[bool, str]:
    """Whether the candidate is at least as good as the active model on the gate metric, and why (pure).

    ``recall_allowance`` is how far the candidate's recall may fall below the active model's and still count as
    no worse: the holdout's own noise in the paired recall difference (tolerance x standard error); 0 is the
    strict rule. Precision keeps the admin's fixed ``margin``. With ``auc_allowance`` the candidate's ROC AUC
    must not fall by more than that either: a model that flags more while ranking worse is what a recall rule
    with room for noise could otherwise let through.
    """

    def value(metrics: dict, key: str) -> float:
        raw = _clean(metrics.get(key))
        return 0.0 if raw is None else float(raw)

    if metric == GateMetric.RECALL:
        c_recall, a_recall = value(candidate, "recall"), value(active, "recall")
        c_precision, a_precision = value(candidate, "precision"), value(active, "precision")
        if auc_allowance is not None:
            c_auc, a_auc = value(candidate, "auc"), value(active, "auc")
            if c_auc < a_auc - auc_allowance - 1e-12:
                return False, (
                    f"ROC AUC on the holdout fell from {a_auc:.3f} to {c_auc:.3f}, "
                    f"more than the {auc_allowance:.3f} its noise allows."
                )
        if c_recall < a_recall - recall_allowance - 1e-12:
            allowed = f", more than the {recall_allowance:.3f} its noise allows" if recall_allowance else ""
            return False, f"Recall on the holdout fell from {a_recall:.3f} to {c_recall:.3f}{allowed}."
        if c_precision < a_precision - margin:
            return False, (
                f"Precision on the holdout fell from {a_precision:.3f} to {c_precision:.3f}, "
                f"more than the allowed margin of {margin:.3f}."
            )
        within = f", within the {recall_allowance:.3f} its noise allows" if c_recall < a_recall else ""
        return True, (
            f"Recall {a_recall:.3f} -> {c_recall:.3f}{within}, precision {a_precision:.3f} -> {c_precision:.3f} "
            f"(margin {margin:.3f}): promoted."
        )
    key = "f1" if metric == GateMetric.F1 else "accuracy"
    c_value, a_value = value(candidate, key), value(active, key)
    if c_value < a_value:
        return False, f"{key} on the holdout fell from {a_value:.3f} to {c_value:.3f}."
    return True, f"{key} {a_value:.3f} -> {c_value:.3f}: promoted."


def _unseen_test_rows(registry, version: str, active_version: str, labels: list[str]):
    """Trainable examples in the candidate's test split that the active model never trained on either.

    Both models use the same stable hash split, so these are as unseen by the active model as by the candidate:
    a fair extension of a holdout that is still too small (early on, rejections are rare, so the allowed label's
    holdout grows slowly).
    """
    import json

    def manifest(name: str) -> dict:
        path = registry.path(name) / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    seen_by_active = set(manifest(active_version).get("train", [])) | set(
        manifest(active_version).get("validation", [])
    )
    unseen = set(manifest(version).get("test", [])) - seen_by_active
    return trainable_examples().filter(sha256__in=unseen, label__in=labels)


def evaluate_gate(
    registry, version: str, active_version: str | None, labels: list[str], prohibited: list[str], settings_row
) -> dict:
    """Score the candidate and the active model on the frozen holdout and decide whether to promote.

    Both are scored with the examples' inverse-propensity weights: a holdout of decisions holds every image the
    active model flagged but only an audit sample of the rest, so unweighted it credits the active model with a
    recall near 1 by construction. Weighted, both models are judged on an estimate of the real stream. The
    minimum per label still counts images, not weights: a few heavy audit images are not enough evidence.

    With no active model the first candidate is promoted: nothing can be scored without a model, and any model
    the gate could compare against later starts here. Its holdout metrics are still recorded when there is a
    holdout. With an active model, a holdout with too few examples of a label is extended by the candidate's test
    split images neither model trained on; if even that is too small, no verdict can be trusted and the
    candidate is rejected with that reason.
    """
    from classifier.evaluation import evaluate_model

    holdout_rows = holdout_examples().filter(label__in=labels)
    counts = {label: 0 for label in labels}
    counts.update(label_counts(holdout_rows))
    threshold = gate_threshold(settings_row, prohibited)
    minimum = settings_row.gate_min_holdout_per_label
    gate = {
        "metric": settings_row.gate_metric,
        "threshold": threshold,
        "margin": settings_row.gate_precision_margin,
        "min_per_label": minimum,
        "holdout_counts": counts,
        "evaluation_counts": dict(counts),
        "extended_with_test_split": 0,
        "candidate_version": version,
        "active_version": active_version,
        "candidate": None,
        "active": None,
    }
    rows = list(holdout_rows)
    if active_version is not None and any(n < minimum for n in counts.values()):
        extra = list(_unseen_test_rows(registry, version, active_version, labels))
        rows += extra
        gate["extended_with_test_split"] = len(extra)
        for row in extra:
            gate["evaluation_counts"][row.label] = gate["evaluation_counts"].get(row.label, 0) + 1
    short = {label: n for label, n in gate["evaluation_counts"].items() if n < minimum}
    evaluation_set = weighted_examples(rows) if not short or active_version is None else []
    gate["weighted_total"] = round(sum(example.weight for example in evaluation_set), 3)

    # Both models are scored on the shared bottleneck cache when their backbones filled it (the usual retrain):
    # each holdout image is then embedded at most once, often already when it was decided.
    cache_dir = django_settings.VIGIA_FEATURE_CACHE
    candidate_model = registry.load(version)
    candidate_outcomes = None
    if evaluation_set:
        scored = evaluate_model(
            candidate_model, evaluation_set, threshold=threshold, keep_outcomes=True, cache_dir=cache_dir
        )
        candidate_outcomes = scored["outcomes"]
        gate["candidate"] = _summary(scored)
        gate["embedded"] = scored["embedded"]
    if active_version is None:
        gate["promote"] = True
        gate["reason"] = "No model was active: the first candidate is promoted."
        return gate
    if short:
        needed = ", ".join(f"{label} {n}/{minimum}" for label, n in short.items())
        gate["promote"] = False
        gate["reason"] = f"Not enough holdout examples to compare ({needed}); the active model stays."
        return gate
    try:
        active_model = registry.load(active_version)
    except Exception as exc:  # a broken active model must not keep a loadable candidate out
        gate["promote"] = True
        gate["reason"] = f"The active model {active_version} could not be loaded ({exc}); the candidate replaces it."
        return gate
    scored = evaluate_model(active_model, evaluation_set, threshold=threshold, keep_outcomes=True, cache_dir=cache_dir)
    gate["active"] = _summary(scored)
    gate["embedded"] += scored["embedded"]
    paired = paired_changes(scored["outcomes"], candidate_outcomes) or {}
    for key, change in paired.items():
        if change is not None:
            gate[f"{key}_change"], gate[f"{key}_change_se"] = round(change[0], 4), round(change[1], 4)
    tolerance = settings_row.gate_tolerance
    gate["tolerance"] = tolerance
    recall_change, auc_change = paired.get("recall"), paired.get("auc")
    gate["promote"], gate["reason"] = compare_on_gate(
        gate["candidate"],
        gate["active"],
        settings_row.gate_metric,
        settings_row.gate_precision_margin,
        recall_allowance=tolerance * recall_change[1] if recall_change else 0.0,
        auc_allowance=tolerance * auc_change[1] if auc_change and tolerance else None,
    )
    if gate["extended_with_test_split"]:
        gate["reason"] += f" (Holdout extended with {gate['extended_with_test_split']} unseen test-split images.)"
    return gate
