"""State only: what the desk knows about listings, images, scores, decisions, settings and training.

Business rules live in `services/`; reads in `selectors/`. Every status is a `TextChoices` so the admin, the API
and the database agree on the spelling, and every transition of an image is stamped so SLAs can be measured.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class ListingStatus(models.TextChoices):
    """Where a listing stands, derived from its images (`services.listings.derive_listing_status`).

    Pending while any image waits for a score; in review while any is flagged or could not be scored; taken down as
    soon as one image is confirmed prohibited; live once every image is cleared or rejected as a false positive.
    """

    PENDING = "pending", "Being scored"
    IN_REVIEW = "in_review", "In review"
    LIVE = "live", "Live"
    TAKEN_DOWN = "taken_down", "Taken down"


class Listing(models.Model):
    """A marketplace listing as its site sent it. Its status is derived from its images' statuses."""

    external_id = models.CharField(max_length=200, unique=True)
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=ListingStatus.choices, default=ListingStatus.PENDING)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="listings"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.external_id}: {self.title}"


class ImageStatus(models.TextChoices):
    """Where one image stands in the pipeline; each state has its own `<status>_at` stamp.

    Pending: stored, waiting for a score. Cleared: scored below its label's threshold and not sampled for audit.
    Flagged: in the review queue, above the threshold or as an audit sample. Confirmed and rejected: a moderator's
    verdict (prohibited, or a false positive). Failed: scoring gave up after the allowed attempts, so the listing
    stays in review instead of going live unscored. Invalid: not a usable image; uploads are checked before they are
    stored, so the pipeline itself does not set it.
    """

    PENDING = "pending", "Waiting for a score"
    CLEARED = "cleared", "Cleared"
    FLAGGED = "flagged", "Flagged for review"
    CONFIRMED = "confirmed", "Confirmed prohibited"
    REJECTED = "rejected", "Rejected (false positive)"
    INVALID = "invalid", "Invalid image"
    FAILED = "failed", "Scoring failed"


class ListingImage(models.Model):
    """One photo of a listing and where it stands in the moderation pipeline.

    `prohibited_probability` and `model_version` mirror the current score so the queue can be ordered by an
    index instead of a join. The claim fields implement a lease: a claim is valid while `claim_expires_at` is in
    the future, so a moderator who closes the tab never blocks an item for long.
    """

    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="images/%Y/%m/%d/", max_length=300)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveIntegerField(default=0)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    image_format = models.CharField(max_length=10, blank=True)
    status = models.CharField(max_length=20, choices=ImageStatus.choices, default=ImageStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    prohibited_probability = models.FloatField(null=True, blank=True)
    prohibited_label = models.CharField(max_length=100, blank=True)
    model_version = models.CharField(max_length=50, blank=True)
    is_audit = models.BooleanField(default=False, help_text="Sent to review as a random sample below the threshold.")
    audit_probability = models.FloatField(
        null=True,
        blank=True,
        help_text="Probability it was sent to review when last routed: 1 at or above the threshold, its audit "
        "sampling probability below. Its inverse is the image's weight as a training and holdout example.",
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="claims"
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    flagged_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    invalid_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["-prohibited_probability", "created_at", "id"],
                name="queue_order_idx",
                condition=Q(status="flagged"),
            ),
            models.Index(fields=["status", "enqueued_at"], name="image_status_idx"),
            # The queue page's counters read these instead of scanning every open item: the oldest flag time is
            # the first entry of one, and audit samples (a few percent of the queue) are all of the other.
            models.Index(fields=["flagged_at"], name="flagged_age_idx", condition=Q(status="flagged")),
            models.Index(fields=["id"], name="flagged_audit_idx", condition=Q(status="flagged", is_audit=True)),
        ]

    def __str__(self):
        return f"image {self.pk} of {self.listing_id} ({self.status})"


class Score(models.Model):
    """What one model version said about one image. Written idempotently: one row per image and version."""

    image = models.ForeignKey(ListingImage, on_delete=models.CASCADE, related_name="scores")
    model_version = models.CharField(max_length=50)
    probabilities = models.JSONField()
    prohibited_probability = models.FloatField()
    prohibited_label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["image", "model_version"], name="one_score_per_version")]

    def __str__(self):
        return f"{self.model_version}: {self.prohibited_probability:.3f} for image {self.image_id}"


class DecisionOutcome(models.TextChoices):
    """A moderator's verdict on a flagged image: confirm it is prohibited, or reject the flag as a false positive."""

    CONFIRM = "confirm", "Confirm (prohibited)"
    REJECT = "reject", "Reject (false positive)"


class PolicyCategory(models.TextChoices):
    """Which policy a confirmed image breaks, for the marketplace and the audit trail; a rejection is always "none"."""

    PROHIBITED_ITEM = "prohibited_item", "Prohibited item"
    WEAPONS = "weapons", "Weapons"
    DRUGS = "drugs", "Drugs"
    ADULT = "adult", "Adult content"
    COUNTERFEIT = "counterfeit", "Counterfeit"
    OTHER = "other", "Other"
    NONE = "none", "No violation"


class Decision(models.Model):
    """A moderator's verdict on an image. Rows are never edited away: an undo stamps `undone_at`."""

    image = models.ForeignKey(ListingImage, on_delete=models.CASCADE, related_name="decisions")
    moderator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    outcome = models.CharField(max_length=10, choices=DecisionOutcome.choices)
    policy_category = models.CharField(max_length=30, choices=PolicyCategory.choices, blank=True)
    label = models.CharField(max_length=100, blank=True, help_text="Training label this decision implies.")
    note = models.TextField(blank=True)
    model_version = models.CharField(max_length=50, blank=True)
    prohibited_probability = models.FloatField(null=True, blank=True)
    was_audit = models.BooleanField(default=False)
    audit_probability = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The database, not the view, guarantees a double submit stores one live decision per image.
            models.UniqueConstraint(fields=["image"], condition=Q(undone_at__isnull=True), name="one_live_decision")
        ]

    def __str__(self):
        return f"{self.outcome} on image {self.image_id} by {self.moderator_id}"


class GateMetric(models.TextChoices):
    """What the gate compares on the holdout before promoting a candidate.

    Recall of the prohibited labels, with precision allowed to drop by at most the gate's margin (the default: a
    missed violation costs more than a needless review); F1 of the prohibited labels; or plain accuracy.
    """

    RECALL = "recall", "Recall of prohibited (precision kept within the margin)"
    F1 = "f1", "F1 of prohibited"
    ACCURACY = "accuracy", "Accuracy"


class AuditSampling(models.TextChoices):
    """How the random audit sample of below-threshold images is drawn (see `selectors.audit.AuditPlan`)."""

    UNIFORM = "uniform", "Uniform: every image below the threshold equally likely"
    BY_SCORE = "by_score", "By score: half the audits uniform, half drawn in proportion to the score"


class ModerationSettings(models.Model):
    """The admin's knobs, one row (pk=1). Read through `selectors.get_settings()`."""

    thresholds = models.JSONField(default=dict, blank=True, help_text="Threshold per prohibited label.")
    default_threshold = models.FloatField(default=0.5, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    retrain_batch_size = models.PositiveIntegerField(default=100, validators=[MinValueValidator(1)])
    claim_lease_seconds = models.PositiveIntegerField(default=120, validators=[MinValueValidator(10)])
    max_scoring_attempts = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1)])
    audit_rate = models.FloatField(default=0.02, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    audit_sampling = models.CharField(
        max_length=20,
        choices=AuditSampling.choices,
        default=AuditSampling.BY_SCORE,
        help_text=(
            "How the audit sample is drawn. Either way about the audit rate of below-threshold images is reviewed; "
            "by score, images just below the threshold, where missed violations are, are reviewed more often and "
            "confident ones less, each weighted by 1 / its own probability."
        ),
    )
    holdout_share = models.FloatField(default=0.2, validators=[MinValueValidator(0.0), MaxValueValidator(0.9)])
    gate_metric = models.CharField(max_length=20, choices=GateMetric.choices, default=GateMetric.RECALL)
    gate_precision_margin = models.FloatField(default=0.02, validators=[MinValueValidator(0.0)])
    gate_min_holdout_per_label = models.PositiveIntegerField(default=10)
    gate_tolerance = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.0)],
        help_text=(
            "How many standard errors of the paired difference on the holdout (bootstrap) a candidate's recall "
            "and ROC AUC may fall short of the active model's and still count as at least as good. 0: any "
            "recall drop rejects."
        ),
    )
    retrain_on_schedule = models.BooleanField(
        default=True, help_text="When the schedule fires, retrain if any new example exists."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "moderation settings"
        verbose_name_plural = "moderation settings"

    def __str__(self):
        return "Moderation settings"

    def threshold_for(self, label: str) -> float:
        """Return the score at or above which an image with this top label is flagged, or the default threshold."""
        return float(self.thresholds.get(label, self.default_threshold))


class ExampleSource(models.TextChoices):
    """Where a training example came from: the imported initial training set, or a moderator's decision."""

    INITIAL = "initial", "Initial training set"
    DECISION = "decision", "Moderator decision"


class TrainingExample(models.Model):
    """One labelled image the classifier may learn from.

    Decisions produce examples (confirm: the prohibited label; reject: the allowed label), and the initial
    training set is imported once. `is_holdout` is fixed by the image hash, so the gate's holdout never moves and
    is never trained on.
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
