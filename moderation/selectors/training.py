"""Reads for the learning loop: training data, runs, model versions, the trigger's state and threshold previews."""

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings as django_settings
from django.db.models import Case, Count, F, FloatField, Q, Sum, Value, When

from moderation.models import (
    OPEN_RUN_STATUSES,
    Decision,
    DecisionOutcome,
    ExampleSource,
    ListingImage,
    ModelVersion,
    ModerationSettings,
    TrainingExample,
    TrainingRun,
    TrainingRunStatus,
    TrainingState,
)
from moderation.selectors.settings import get_settings


def example_path(example: TrainingExample) -> Path:
    """Absolute file of an example: stored paths are relative to MEDIA_ROOT unless they start with /."""
    path = Path(example.path)
    return path if path.is_absolute() else Path(django_settings.MEDIA_ROOT) / path


def trainable_examples():
    """Examples a retrain learns from: active and outside the frozen holdout."""
    return TrainingExample.objects.filter(active=True, is_holdout=False)


def holdout_examples():
    """The gate's frozen holdout: active human-labelled examples chosen by hash, never trained on."""
    return TrainingExample.objects.filter(active=True, is_holdout=True, source=ExampleSource.DECISION)


def to_classifier_examples_from_rows(rows) -> list:
    """Turn example rows into `classifier.data.Example`s, skipping rows whose file is gone from disk."""
    from classifier.data import Example

    examples = []
    for row in rows:
        path = example_path(row)
        if path.exists():
            examples.append(Example(sha256=row.sha256, label=row.label, path=path))
    return examples


def label_counts(queryset) -> dict[str, int]:
    """Count a queryset of examples per label, in label order."""
    return {row["label"]: row["n"] for row in queryset.values("label").annotate(n=Count("id")).order_by("label")}


def new_example_count() -> int:
    """Trainable examples no run has used yet (what the next run adds)."""
    return trainable_examples().filter(used_in_run__isnull=True).count()


def training_state() -> TrainingState:
    """The retrain trigger's counter row, created on first use (read only; the trigger locks it to write)."""
    state, _ = TrainingState.objects.get_or_create(pk=1)
    return state


@dataclass(frozen=True)
class TriggerStatus:
    """The batch-size trigger's progress and the run that is queued or running, if any."""

    batch_size: int
    confirmed_since_last_run: int
    remaining: int
    new_examples: int
    open_run: TrainingRun | None


def trigger_status() -> TriggerStatus:
    """How far the batch-size trigger is from firing, for the settings and runs pages."""
    settings_row = get_settings()
    state = training_state()
    return TriggerStatus(
        batch_size=settings_row.retrain_batch_size,
        confirmed_since_last_run=state.confirmed_since_last_run,
        remaining=max(0, settings_row.retrain_batch_size - state.confirmed_since_last_run),
        new_examples=new_example_count(),
        open_run=TrainingRun.objects.filter(status__in=OPEN_RUN_STATUSES).order_by("created_at").first(),
    )


def list_training_runs(limit: int = 50):
    """The latest runs, newest first, for the runs page."""
    return TrainingRun.objects.select_related("requested_by").order_by("-created_at", "-id")[:limit]


def run_progress(run: TrainingRun) -> dict:
    """The JSON the runs page polls: status, phase and progress as a fraction."""
    fraction = run.progress_current / run.progress_total if run.progress_total else 0.0
    if run.status in (TrainingRunStatus.SUCCEEDED, TrainingRunStatus.REJECTED):
        fraction = 1.0
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "phase": run.phase,
        "progress_current": run.progress_current,
        "progress_total": run.progress_total,
        "fraction": round(fraction, 4),
        "model_version": run.model_version,
        "reason": run.reason,
        "new_examples": run.new_examples,
        "total_examples": run.total_examples,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
    }


def list_model_versions():
    """Every mirrored model version, newest first, with the run that trained it."""
    return ModelVersion.objects.select_related("training_run").order_by("-created_at", "-version")


@dataclass(frozen=True)
class VersionRuntime:
    """How scoring processes run a version: with its checked LiteRT file or with Keras, and why."""

    runtime: str
    reason: str
    max_abs_diff: float | None = None
    check_images: int | None = None
    embedding: str = "keras"


def version_runtime(*, version: str) -> VersionRuntime:
    """What serves ``version`` (read from the registry), with the equivalence check's figures or the reason for Keras.

    The same rule as the scoring processes' (`classifier.serving`): a LiteRT file that passed its check and still
    matches its sha256, unless `VIGIA_RUNTIME=keras`.
    """
    from classifier.registry import Registry, RegistryError

    if django_settings.VIGIA_RUNTIME == "keras":
        return VersionRuntime(runtime="keras", reason="VIGIA_RUNTIME=keras makes every version serve with Keras.")
    registry = Registry(django_settings.VIGIA_MODEL_REGISTRY)
    try:
        record = registry.litert(version)
        intact = registry.litert_content(version, "scoring") is not None
        extractor = registry.litert_content(version, "features") is not None
    except RegistryError as error:
        return VersionRuntime(runtime="keras", reason=f"The LiteRT file is refused: {error}.")
    scoring = record.get("scoring") or {}
    if not intact:
        why = scoring.get("reason") or "the version was saved before LiteRT files existed"
        return VersionRuntime(runtime="keras", reason=f"No LiteRT file: {why}.")
    return VersionRuntime(
        runtime="litert",
        reason="Checked equal to the Keras model before it was saved.",
        max_abs_diff=scoring.get("max_abs_diff"),
        check_images=scoring.get("check_images"),
        embedding="litert" if extractor else "keras",
    )


def examples_that_trained(version: ModelVersion):
    """Decision examples a version learned from (label lineage).

    An example records the run that first used it; every later run trains on it too while it stays active, so a
    version learned from the active, non-holdout examples first used by its own run or an earlier one.
    """
    qs = trainable_examples().filter(source=ExampleSource.DECISION)
    if version.training_run_id is None:
        return qs.none()
    return qs.filter(used_in_run_id__lte=version.training_run_id).select_related("decision", "moderator", "image")


def gate_threshold(settings_row: ModerationSettings, prohibited: list[str]) -> float:
    """The threshold the gate compares at: the prohibited label's own when there is one label, else the default."""
    if len(prohibited) == 1:
        return settings_row.threshold_for(prohibited[0])
    return settings_row.default_threshold


def decision_weight(audit_rate: float):
    """A decision's inverse-propensity weight as a database expression (`services.examples.inclusion_weight`).

    An audit decision counts 1 / the probability its image was drawn with (the current audit rate for decisions
    recorded before images kept it); a QA verdict on an automated takedown 1 / the QA rate it was drawn with;
    every other decision counts 1.
    """
    fallback = 1.0 / audit_rate if 0 < audit_rate < 1 else 1.0
    return Case(
        When(
            ~Q(qa_outcome=""),
            qa_probability__gt=0,
            qa_probability__lt=1,
            then=Value(1.0) / F("qa_probability"),
        ),
        When(
            was_audit=True,
            audit_probability__gt=0,
            audit_probability__lt=1,
            then=Value(1.0) / F("audit_probability"),
        ),
        When(was_audit=True, audit_probability__isnull=True, then=Value(fallback)),
        default=Value(1.0),
        output_field=FloatField(),
    )


def measured_decisions():
    """Live decisions that measure the model: every person's and bank's, and the model's own takedowns only once QA
    gave them a verdict (an unchecked auto-action would count the model's output as its own confirmation)."""
    unchecked = Q(automated=True, bank_entry__isnull=True, qa_outcome="")
    return Decision.objects.filter(undone_at__isnull=True, prohibited_probability__isnull=False).exclude(unchecked)


def threshold_preview(threshold: float, prohibited_label: str | None = None) -> dict:
    """What a threshold would do, estimated from past scores and decisions.

    Queue share: scored images at or above it. Precision: of decided images at or above it, the share confirmed.
    Recall: of confirmed images, the share at or above it. Decisions come mostly from flagged images plus the
    audit sample below the threshold, so every audit decision counts 1 / the probability it was drawn with: it
    stands for that many unreviewed images like it. Recall is still optimistic while the audit sample is small.
    """
    scored = ListingImage.objects.filter(prohibited_probability__isnull=False)
    if prohibited_label:
        scored = scored.filter(prohibited_label=prohibited_label)
    total = scored.count()
    above = scored.filter(prohibited_probability__gte=threshold).count()
    decided = measured_decisions()
    weight = decision_weight(get_settings().audit_rate)
    confirmed = Q(outcome=DecisionOutcome.CONFIRM)
    is_above = Q(prohibited_probability__gte=threshold)
    sums = decided.aggregate(
        above=Sum(weight, filter=is_above, default=0.0),
        above_confirmed=Sum(weight, filter=is_above & confirmed, default=0.0),
        confirmed=Sum(weight, filter=confirmed, default=0.0),
    )
    return {
        "threshold": threshold,
        "scored": total,
        "queue_share": above / total if total else None,
        "decisions": decided.count(),
        "precision": sums["above_confirmed"] / sums["above"] if sums["above"] else None,
        "recall": sums["above_confirmed"] / sums["confirmed"] if sums["confirmed"] else None,
    }
