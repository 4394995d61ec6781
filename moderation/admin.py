"""Django admin for every model: an operator's view of raw state, for support and audits.

Pipeline state (statuses, scores, decisions, training runs) is written by services so its invariants hold; the
admin shows those fields read-only and leaves changes to the desk's own pages, except the settings row and the
claim fields an operator may need to clear by hand.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from moderation.models import (
    Decision,
    DeliveryAttempt,
    Listing,
    ListingImage,
    ModelVersion,
    ModerationSettings,
    Score,
    TrainingExample,
    TrainingRun,
    TrainingState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)

TIMESTAMPS = ("created_at",)


class ListingImageInline(admin.TabularInline):
    """A listing's images with their status and current score, read-only, each linking to its own page."""

    model = ListingImage
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "status", "prohibited_probability", "prohibited_label", "model_version", "is_audit")
    readonly_fields = fields


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    """Listings, searchable by external id and text; the status is derived from the images, so it is read-only."""

    list_display = ("external_id", "title", "status", "submitted_by", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("external_id", "title", "description")
    readonly_fields = ("status", "created_at", "updated_at")
    raw_id_fields = ("submitted_by",)
    date_hierarchy = "created_at"
    inlines = [ListingImageInline]


class ScoreInline(admin.TabularInline):
    """Every model version's score of an image, read-only."""

    model = Score
    extra = 0
    can_delete = False
    fields = ("model_version", "prohibited_probability", "prohibited_label", "created_at")
    readonly_fields = fields


class DecisionInline(admin.TabularInline):
    """The decisions on an image, undone ones included, read-only: the audit trail."""

    model = Decision
    extra = 0
    can_delete = False
    fields = ("outcome", "policy_category", "moderator", "label", "note", "created_at", "undone_at")
    readonly_fields = fields


@admin.register(ListingImage)
class ListingImageAdmin(admin.ModelAdmin):
    """Images with their pipeline state read-only; the claim fields stay editable to clear a stuck claim."""

    list_display = (
        "id",
        "listing",
        "status",
        "prohibited_probability",
        "prohibited_label",
        "model_version",
        "is_audit",
        "attempts",
        "claimed_by",
        "created_at",
    )
    list_filter = ("status", "is_audit", "model_version", "image_format")
    search_fields = ("sha256", "listing__external_id", "listing__title")
    list_select_related = ("listing", "claimed_by")
    raw_id_fields = ("listing", "claimed_by")
    readonly_fields = (
        "image_file",
        "sha256",
        "size_bytes",
        "width",
        "height",
        "image_format",
        "status",
        "attempts",
        "last_error",
        "prohibited_probability",
        "prohibited_label",
        "model_version",
        "is_audit",
        "audit_probability",
        "created_at",
        "enqueued_at",
        "scored_at",
        "cleared_at",
        "flagged_at",
        "confirmed_at",
        "rejected_at",
        "invalid_at",
        "failed_at",
    )
    exclude = ("file",)
    inlines = [ScoreInline, DecisionInline]

    @admin.display(description="File")
    def image_file(self, obj):
        """Link to the stored file through the moderators-only image view."""
        # Uploads are not public media: link to the moderators-only view that serves them with nosniff.
        if not obj.pk or not obj.file:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("image-file", args=[obj.pk]), obj.file.name)

    def has_add_permission(self, request):
        """Refuse: images are added through the API or the upload page."""
        # Images come in through the API or the upload page, where they are validated and re-encoded.
        return False


@admin.register(Score)
class ScoreAdmin(admin.ModelAdmin):
    """Scores, read-only: only the scoring service writes them."""

    list_display = ("image", "model_version", "prohibited_probability", "prohibited_label", "created_at")
    list_filter = ("model_version", "prohibited_label")
    search_fields = ("image__sha256", "image__listing__external_id")
    list_select_related = ("image",)
    readonly_fields = (
        "image",
        "model_version",
        "probabilities",
        "prohibited_probability",
        "prohibited_label",
        "created_at",
    )

    def has_add_permission(self, request):
        """Refuse: scores come from the model only."""
        return False


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    """Decisions, read-only, searchable by image, listing, moderator and note."""

    list_display = ("image", "outcome", "policy_category", "moderator", "label", "was_audit", "created_at", "undone_at")
    list_filter = ("outcome", "policy_category", "was_audit", "model_version")
    search_fields = ("image__sha256", "image__listing__external_id", "moderator__username", "note")
    list_select_related = ("image", "moderator")
    date_hierarchy = "created_at"
    readonly_fields = (
        "image",
        "moderator",
        "outcome",
        "policy_category",
        "label",
        "note",
        "model_version",
        "prohibited_probability",
        "was_audit",
        "audit_probability",
        "created_at",
        "undone_at",
    )

    def has_add_permission(self, request):
        """Refuse: decisions are made on the review desk."""
        # Decisions are made on the review desk, where claims, training data and listing status stay consistent.
        return False


@admin.register(ModerationSettings)
class ModerationSettingsAdmin(admin.ModelAdmin):
    """The one settings row, editable; the desk's settings page is the usual way to change it."""

    list_display = ("__str__", "default_threshold", "retrain_batch_size", "claim_lease_seconds", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request):
        """Allow adding only while the settings row does not exist yet."""
        # One row (pk=1), created on first use by selectors.settings.get_settings().
        return not ModerationSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        """Refuse: the desk always needs its settings row."""
        return False


@admin.register(TrainingExample)
class TrainingExampleAdmin(admin.ModelAdmin):
    """Training examples, filterable by source, label, holdout and whether they are still active."""

    list_display = ("sha256", "label", "source", "is_holdout", "active", "moderator", "used_in_run", "created_at")
    list_filter = ("source", "label", "is_holdout", "active")
    search_fields = ("sha256", "label", "path")
    list_select_related = ("moderator", "used_in_run")
    raw_id_fields = ("image", "decision", "moderator", "used_in_run")
    readonly_fields = TIMESTAMPS


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    """Training runs, read-only: their state belongs to the training services."""

    list_display = ("id", "status", "trigger", "phase", "model_version", "new_examples", "created_at", "finished_at")
    list_filter = ("status", "trigger")
    search_fields = ("model_version", "reason")
    readonly_fields = (
        "status",
        "trigger",
        "requested_by",
        "phase",
        "progress_current",
        "progress_total",
        "new_examples",
        "total_examples",
        "metrics",
        "gate",
        "model_version",
        "reason",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
    )

    def has_add_permission(self, request):
        """Refuse: runs are started from the training page."""
        # Runs are started from the training page so the one-open-run rule and the queue stay in step.
        return False


@admin.register(TrainingState)
class TrainingStateAdmin(admin.ModelAdmin):
    """The retrain trigger's counter, one row, and the run it last started."""

    list_display = ("__str__", "confirmed_since_last_run", "new_examples_since_last_run", "last_run")
    raw_id_fields = ("last_run",)

    def has_add_permission(self, request):
        """Refuse: the trigger creates its row on first use."""
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Model versions, read-only mirrors of the registry on disk."""

    list_display = ("version", "is_active", "activated_at", "training_run", "created_at")
    list_filter = ("is_active",)
    search_fields = ("version",)
    readonly_fields = (
        "version",
        "labels",
        "prohibited_labels",
        "metrics",
        "training_run",
        "is_active",
        "activated_at",
        "created_at",
    )

    def has_add_permission(self, request):
        """Refuse: versions are mirrored from the registry by the model-version services."""
        # Versions mirror the registry on disk; activation goes through the models page and its service.
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows an admin may look at but not change here: the desk's own pages (or the services behind them) write them."""

    def has_add_permission(self, request):
        """Refuse: these rows are made by services."""
        return False

    def has_change_permission(self, request, obj=None):
        """Refuse: history and service-owned state stay as written."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Refuse: deleting would rewrite the delivery history."""
        return False


class WebhookSecretInline(admin.TabularInline):
    """An endpoint's secrets: when made and when they expire, never their value."""

    model = WebhookSecret
    extra = 0
    can_delete = False
    fields = ("id", "created_at", "expires_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        """Refuse: secrets are made (and shown once) on the desk's webhook pages."""
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    """Webhook endpoints, read-only: added, rotated, enabled and disabled on the desk's webhook pages."""

    list_display = ("id", "client", "url", "is_enabled", "failing_since", "disabled_at", "created_at")
    list_filter = ("is_enabled", "client")
    search_fields = ("url", "description", "client__name")
    list_select_related = ("client",)
    fields = (
        "client",
        "url",
        "description",
        "event_types",
        "is_enabled",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "created_at",
    )
    readonly_fields = fields
    inlines = [WebhookSecretInline]


@admin.register(WebhookSecret)
class WebhookSecretAdmin(ReadOnlyAdmin):
    """Signing secrets, read-only and without their value: only when they were made and expire."""

    list_display = ("id", "endpoint", "created_at", "expires_at")
    list_select_related = ("endpoint",)
    fields = ("endpoint", "created_at", "expires_at")
    readonly_fields = fields


class DeliveryAttemptInline(admin.TabularInline):
    """A delivery's attempts, newest first: when, how long, what came back, the next try."""

    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("attempted_at", "duration_ms", "status_code", "error", "next_attempt_at")
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Webhook deliveries, read-only history; replays are made on the desk's endpoint page."""

    list_display = ("id", "event", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at", "is_replay")
    list_filter = ("status", "is_replay")
    search_fields = ("event__uid", "endpoint__url", "last_error")
    list_select_related = ("event", "endpoint")
    raw_id_fields = ("event", "endpoint")
    inlines = [DeliveryAttemptInline]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdmin):
    """Every attempt at sending a webhook, read-only history."""

    list_display = ("id", "delivery", "attempted_at", "duration_ms", "status_code", "error", "next_attempt_at")
    list_filter = ("status_code",)
    search_fields = ("error",)
    list_select_related = ("delivery",)
    raw_id_fields = ("delivery",)
