"""The learning loop's state: training examples, runs, the trigger's counter and the mirrored model versions."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from moderation.models.listings import ListingImage
from moderation.models.review import Decision


class ExampleSource(models.TextChoices):
    """Where a training example came from: the imported initial training set, or a moderator's decision."""

    INITIAL = "initial", "Initial training set"
    DECISION = "decision", "Moderator decision"


class TrainingExample(models.Model):
    """One labelled image the classifier may learn from.

    Decisions produce examples (confirm: the prohibited label; reject: the allowed label), and the initial
    training set is imported once. `is_holdout` is decided by the image's near-duplicate group (the oldest
    example's hash), so the gate's holdout never holds a copy of a training image and is never trained on.
    """

    sha256 = models.CharField(max_length=64)
    path = models.CharField(
        max_length=500, help_text="Image file on disk, relative to MEDIA_ROOT when it starts without /."
    )
    label = models.CharField(max_length=100)
    source = models.CharField(max_length=20, choices=ExampleSource.choices)
    image = models.ForeignKey(ListingImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="examples")
    decision = models.ForeignKey(Decision, null=True, blank=True, on_delete=models.SET_NULL, related_name="examples")
    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="examples"
    )
    is_holdout = models.BooleanField(default=False)
    pdq_dihedral = models.CharField(
        max_length=512, blank=True, help_text="PDQ hashes of the image and its 7 rotations and mirror images, joined."
    )
    active = models.BooleanField(default=True, help_text="False once the decision behind it was undone.")
    weight = models.FloatField(
        default=1.0,
        help_text="1 / the probability the image was reviewed at all: 1 for flagged images, 1 / audit rate for audits.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    used_in_run = models.ForeignKey(
        "TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="first_used_examples"
    )

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["sha256", "source"], name="one_example_per_image_source")]

    def __str__(self):
        return f"{self.label} ({self.source}) {self.sha256[:12]}"


class TrainingRunStatus(models.TextChoices):
    """A retrain's life: queued, running, then succeeded (the gate promoted it), rejected by the gate, or failed."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded (promoted)"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected by the gate"


#: A run that has not ended: at most one exists (the `one_open_training_run` constraint), and a new trigger joins it.
OPEN_RUN_STATUSES = [TrainingRunStatus.QUEUED, TrainingRunStatus.RUNNING]


class TrainingTrigger(models.TextChoices):
    """Why a run was started.

    Batch: the confirmations since the last run reached the retrain batch size. Schedule: the beat schedule fired
    and new examples exist. Manual: an admin pressed "Retrain now" (or ran `manage.py retrain`). Initial: the first
    model, trained when none is active yet.
    """

    BATCH = "batch", "Retrain batch size reached"
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Retrain now"
    INITIAL = "initial", "Initial model"


class TrainingRun(models.Model):
    """One retrain: queued, run on the `training` queue, evaluated, and promoted or rejected by the gate."""

    status = models.CharField(max_length=20, choices=TrainingRunStatus.choices, default=TrainingRunStatus.QUEUED)
    trigger = models.CharField(max_length=20, choices=TrainingTrigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    phase = models.CharField(max_length=30, blank=True)
    progress_current = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    new_examples = models.PositiveIntegerField(default=0)
    total_examples = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    gate = models.JSONField(default=dict, blank=True, help_text="Candidate vs active on the frozen holdout.")
    model_version = models.CharField(max_length=50, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one run is queued or running: the database refuses a second one.
            models.UniqueConstraint(
                fields=["status"],
                condition=Q(status__in=OPEN_RUN_STATUSES),
                name="one_open_training_run",
            )
        ]

    def __str__(self):
        return f"training run {self.pk} ({self.status})"


class TrainingState(models.Model):
    """The retrain trigger's counter, one row (pk=1), locked with `select_for_update` when it changes."""

    confirmed_since_last_run = models.PositiveIntegerField(default=0)
    new_examples_since_last_run = models.PositiveIntegerField(default=0)
    last_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self):
        return f"{self.confirmed_since_last_run} confirmations since the last run"


class ModelVersion(models.Model):
    """A version in the classifier's registry, mirrored so pages and audits can join on it.

    The registry's `active` pointer is what workers read; `is_active` here is flipped in the same service call.
    """

    version = models.CharField(max_length=50, unique=True)
    labels = models.JSONField(default=list)
    prohibited_labels = models.JSONField(default=list)
    metrics = models.JSONField(default=dict, blank=True)
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    allowed_label = models.CharField(
        max_length=100,
        blank=True,
        help_text="The label a rejection teaches, from the version's metadata (allowed_label).",
    )
    holdout_scores = models.JSONField(
        default=dict,
        blank=True,
        help_text="The version's prohibited score on each holdout example (keys, labels, scores, weights).",
    )
    training_scores = models.JSONField(
        default=dict,
        blank=True,
        help_text="The prohibited score of each of its training examples from a model that never trained on it "
        "(out-of-fold, or its validation and test splits): keys, labels, scores, weights, sources. Calibration "
        "counts them beside the holdout.",
    )
    calibration = models.JSONField(
        default=dict, blank=True, help_text="The thresholds derived for this version from its holdout, per label."
    )
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_model")
        ]

    def __str__(self):
        return self.version
