"""Moderators' verdicts on flagged photos: the outcome, the policy ground and the label it teaches."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from moderation.models.listings import ListingImage


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


class DecisionManager(models.Manager):
    """Decisions dated by the desk's clock."""

    def create_at(self, when, **fields) -> "Decision":
        """Create a decision whose `created_at` is `when`: `auto_now_add` stamps the wall clock, while the desk's
        clock (injectable in tests) decides undo windows, SLA reports and time to action."""
        decision = self.create(**fields)
        self.filter(pk=decision.pk).update(created_at=when)
        decision.created_at = when
        return decision


class Decision(models.Model):
    """A moderator's verdict on an image. Rows are never edited away: an undo stamps `undone_at`.

    An appeal that overturns a confirmation stamps the confirmation `undone_at` and `overturned_at` and records a new
    rejection made through the appeal (`appeal`, `overturns`), so the lineage of every label stays readable.

    An automated decision has no moderator: `automated` is set and it cites what caused it. A bank match cites the
    bank entry, whose source decision is the human one it repeats; a model auto-action cites the model version, its
    score and the auto-action threshold it reached (`auto_threshold`), and may be drawn into the QA sample
    (`qa_probability`, `qa_sampled`), where a moderator's verdict (`qa_outcome`) measures the auto precision. A
    decision taken on a near-duplicate group is one row per member; the members' rows point at the lead's
    (`applied_from`), so undo takes the group back.
    """

    image = models.ForeignKey(ListingImage, on_delete=models.CASCADE, related_name="decisions")
    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="decisions"
    )
    automated = models.BooleanField(default=False, help_text="Made by a bank match or the model, not by a person.")
    bank_entry = models.ForeignKey(
        "BankEntry", null=True, blank=True, on_delete=models.PROTECT, related_name="automated_decisions"
    )
    auto_threshold = models.FloatField(
        null=True, blank=True, help_text="The auto-action threshold a model auto-action reached (none for others)."
    )
    qa_probability = models.FloatField(
        null=True, blank=True, help_text="The chance a model auto-action was drawn into the QA sample (the QA rate)."
    )
    qa_sampled = models.BooleanField(
        default=False, help_text="A model auto-action waiting for, or given, a QA verdict."
    )
    qa_outcome = models.CharField(max_length=10, choices=DecisionOutcome.choices, blank=True)
    qa_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="qa_verdicts"
    )
    qa_at = models.DateTimeField(null=True, blank=True)
    applied_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="applied_to",
        help_text="The decision on the group's lead this one was applied from.",
    )
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
    overturned_at = models.DateTimeField(
        null=True, blank=True, help_text="When an appeal overturned it: a correction in its moderator's record."
    )
    overturns = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="overturned_by")
    appeal = models.ForeignKey("Appeal", null=True, blank=True, on_delete=models.PROTECT, related_name="decisions_made")

    objects = DecisionManager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The database, not the view, guarantees a double submit stores one live decision per image.
            models.UniqueConstraint(fields=["image"], condition=Q(undone_at__isnull=True), name="one_live_decision"),
            # A person decided, or a bank match did (citing its entry), or the model did (citing its version, score
            # and auto-action threshold): never nobody, never a person and a machine at once.
            models.CheckConstraint(
                condition=Q(automated=False, moderator__isnull=False, bank_entry__isnull=True)
                | Q(automated=True, moderator__isnull=True, bank_entry__isnull=False)
                | (
                    Q(automated=True, moderator__isnull=True, bank_entry__isnull=True)
                    & ~Q(model_version="")
                    & Q(prohibited_probability__isnull=False, auto_threshold__isnull=False)
                ),
                name="decided_by_a_person_a_bank_or_the_model",
            ),
        ]

    def __str__(self):
        return f"{self.outcome} on image {self.image_id} by {self.decided_by}"

    @property
    def decided_by(self) -> str:
        """Who decided, for pages and exports: the moderator's username, or which automated means did."""
        if self.automated:
            return "automated (bank match)" if self.bank_entry_id else "automated (model)"
        return self.moderator.get_username() if self.moderator_id else ""
