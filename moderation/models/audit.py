"""The audit trail: who did what to which object, when, from where, and what it was before and after.

A moderation desk is where a marketplace meets its legal duties (the EU DSA asks for a statement of reasons for
every restriction, and an appeal route), so its history must be complete and tamper-evident. Entries are written by
the services that make the changes, in the same transaction, and are append-only: the model refuses updates and
deletes through the ORM, the admin shows them read-only, and on PostgreSQL a trigger refuses UPDATE and DELETE on
the table itself (migration 0009).
"""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class AuditAction(models.TextChoices):
    """What was done. Grouped by the object it is done to."""

    DECISION_MADE = "decision.made", "Decision made"
    DECISION_UNDONE = "decision.undone", "Decision undone"
    DECISION_QA = "decision.qa", "Automated decision given a QA verdict"
    APPEAL_DECIDED = "appeal.decided", "Appeal decided"
    SETTINGS_CHANGED = "settings.changed", "Settings changed"
    MODEL_ACTIVATED = "model.activated", "Model version activated"
    MODEL_ROLLED_BACK = "model.rolled_back", "Model version rolled back"
    MODEL_RECALIBRATED = "model.recalibrated", "Thresholds recalibrated for a model version"
    TRAINING_REQUESTED = "training.requested", "Retrain requested"
    EXAMPLE_DEACTIVATED = "example.deactivated", "Training example deactivated"
    EXAMPLE_MOVED_TO_TRAINING = "example.moved_to_training", "Holdout example moved to training (a copy trains)"
    BANK_CREATED = "bank.created", "Hash bank created"
    BANK_CHANGED = "bank.changed", "Hash bank changed"
    BANK_IMPORTED = "bank.imported", "Hashes imported into a bank"
    BANK_ENTRY_REMOVED = "bank.entry_removed", "Hash bank entry removed"
    IMAGE_RETRIED = "image.retried", "Failed image retried"
    IMAGE_SENT_TO_REVIEW = "image.sent_to_review", "Failed image sent to review"
    LISTING_WITHDRAWN = "listing.withdrawn", "Listing withdrawn"
    CLIENT_CREATED = "client.created", "Client created"
    CLIENT_CHANGED = "client.changed", "Client changed"
    KEY_ISSUED = "key.issued", "API key issued"
    KEY_REVOKED = "key.revoked", "API key revoked"
    WEBHOOK_CREATED = "webhook.created", "Webhook endpoint created"
    WEBHOOK_CHANGED = "webhook.changed", "Webhook endpoint changed"
    USER_CHANGED = "user.changed", "User changed"
    ROLE_CHANGED = "role.changed", "Roles changed"
    LOGIN_FAILED = "login.failed", "Login failed"


class AuditQuerySet(models.QuerySet):
    """Entries can be read and added; bulk updates and deletes are refused, as single ones are."""

    def update(self, **kwargs):
        """Refuse: the audit trail is append-only."""
        raise PermissionError("Audit entries are never changed.")

    def delete(self):
        """Refuse: the audit trail is append-only."""
        raise PermissionError("Audit entries are never deleted.")


class AuditEntry(models.Model):
    """One audited action: actor (or the system), time, object, action, before and after, request id and IP."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_entries"
    )
    actor_name = models.CharField(
        max_length=150, blank=True, help_text="The actor's username then; 'system' for automated actions."
    )
    action = models.CharField(max_length=40, choices=AuditAction.choices, db_index=True)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    note = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action} {self.object_type}"

    def save(self, *args, **kwargs):
        """Insert only: an entry that exists is never written again."""
        if self.pk is not None:
            raise PermissionError("Audit entries are never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        """Refuse: the audit trail is append-only."""
        raise PermissionError("Audit entries are never deleted.")
