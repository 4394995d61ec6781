"""The admin's knobs: thresholds, batch size, leases, audit sampling and the promotion gate (one row)."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


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

    thresholds = models.JSONField(default=dict, blank=True, help_text="Review threshold per prohibited label.")
    auto_thresholds = models.JSONField(
        default=dict,
        blank=True,
        help_text="Auto-action threshold per prohibited label; a label without one is never taken down by the model.",
    )
    auto_off_reasons = models.JSONField(
        default=dict, blank=True, help_text="Why auto-action is off for a label, as the last recalibration found."
    )
    pinned_labels = models.JSONField(
        default=list, blank=True, help_text="Labels whose thresholds an admin set by hand: recalibration keeps them."
    )
    precision_target = models.FloatField(
        default=0.99,
        validators=[MinValueValidator(0.5), MaxValueValidator(0.9999)],
        help_text=(
            "Auto-action takes an image down without review only above the lowest score at which the holdout's "
            "95% lower confidence bound on precision reaches this."
        ),
    )
    recall_target = models.FloatField(
        default=0.95,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=(
            "The review threshold is the highest score that still catches this share of the holdout's violations."
        ),
    )
    qa_rate = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of automated takedowns sent to the QA queue, where moderators measure the auto precision.",
    )
    last_calibration = models.JSONField(
        default=dict, blank=True, help_text="The last recalibration: version, when, thresholds before and after."
    )
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
    appeal_window_days = models.PositiveIntegerField(
        default=183,
        validators=[MinValueValidator(1)],
        help_text="How long after a takedown its seller may appeal (about six months by default).",
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

    def auto_threshold_for(self, label: str) -> float | None:
        """Return the score at or above which the model takes an image down on its own, or None (auto-action off)."""
        value = self.auto_thresholds.get(label)
        return None if value is None else float(value)
