"""Admin of the moderation pipeline: listings, images, scores, decisions, training and settings.

Pipeline state (statuses, scores, decisions, training runs) is written by services so its invariants hold; the
admin shows those fields read-only and leaves changes to the desk's own pages, except the settings row and the
claim fields an operator may need to clear by hand.
"""

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from moderation.admin.base import ReadOnlyAdmin
from moderation.models import (
    Appeal,
    Decision,
    Listing,
    ListingImage,
    ModelVersion,
    ModerationSettings,
    Score,
    TrainingExample,
    TrainingRun,
    TrainingState,
)
from moderation.services.examples import deactivate_example
from moderation.services.listings import withdraw_listing
from moderation.services.settings import update_settings

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
    actions = ["withdraw"]

    def has_delete_permission(self, request, obj=None):
        """Refuse: a listing is withdrawn, never deleted; its decisions and examples are history."""
        return False

    @admin.action(description="Withdraw the selected listings (their undecided photos leave the queue)")
    def withdraw(self, request, queryset):
        """Withdraw each selected listing through the listing service (audited, events sent)."""
        for listing_id in queryset.values_list("pk", flat=True):
            withdraw_listing(listing_id=listing_id)
        self.message_user(request, f"{queryset.count()} listing(s) withdrawn.")


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
    fields = ("outcome", "policy_category", "moderator", "label", "note", "created_at", "undone_at", "overturned_at")
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
        "deferrals",
        "next_attempt_at",
        "scoring_lease_key",
        "scoring_lease_expires_at",
        "sent_to_review_at",
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

    def has_delete_permission(self, request, obj=None):
        """Refuse: an image's scores and decisions are history."""
        return False


@admin.register(Score)
class ScoreAdmin(ReadOnlyAdmin):
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


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
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
        "overturned_at",
        "overturns",
        "appeal",
    )


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

    def save_model(self, request, obj, form, change):
        """Save through the settings service, so a change made here is audited like one made on the desk."""
        update_settings(values={name: form.cleaned_data[name] for name in form.changed_data})


class DeactivateExampleForm(forms.ModelForm):
    """The one change an example takes by hand: deactivation, with the reason it is audited with."""

    reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Why it must not train models any more."
    )

    class Meta:
        model = TrainingExample
        fields = ["active"]

    def clean(self):
        """Refuse reactivation here and a deactivation without a reason."""
        cleaned = super().clean()
        if self.instance.active is False and cleaned.get("active"):
            raise forms.ValidationError("A deactivated example is not reactivated by hand; a new decision makes one.")
        if self.instance.active and cleaned.get("active") is False and not (cleaned.get("reason") or "").strip():
            raise forms.ValidationError("Say why the example is deactivated.")
        return cleaned


@admin.register(TrainingExample)
class TrainingExampleAdmin(admin.ModelAdmin):
    """Training examples, filterable by source, label, holdout and state; only deactivation (with a reason) is
    allowed, since an edited label or holdout flag would silently poison training or move the holdout."""

    form = DeactivateExampleForm
    list_display = ("sha256", "label", "source", "is_holdout", "active", "moderator", "used_in_run", "created_at")
    list_filter = ("source", "label", "is_holdout", "active")
    search_fields = ("sha256", "label", "path")
    list_select_related = ("moderator", "used_in_run")
    readonly_fields = (
        "sha256",
        "path",
        "label",
        "source",
        "image",
        "decision",
        "moderator",
        "is_holdout",
        "weight",
        "used_in_run",
        "created_at",
    )
    fields = (*readonly_fields, "active", "reason")

    def has_add_permission(self, request):
        """Refuse: examples come from decisions and the initial training set's import."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Refuse: deactivate an example instead; its lineage stays."""
        return False

    def save_model(self, request, obj, form, change):
        """Deactivate through the examples service (audited with the reason); nothing else is saved."""
        if "active" in form.changed_data and not form.cleaned_data["active"]:
            deactivate_example(example_id=obj.pk, reason=form.cleaned_data["reason"])


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
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


@admin.register(TrainingState)
class TrainingStateAdmin(admin.ModelAdmin):
    """The retrain trigger's counter, one row, and the run it last started."""

    list_display = ("__str__", "confirmed_since_last_run", "new_examples_since_last_run", "last_run")
    raw_id_fields = ("last_run",)

    def has_add_permission(self, request):
        """Refuse: the trigger creates its row on first use."""
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
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


@admin.register(Appeal)
class AppealAdmin(ReadOnlyAdmin):
    """Sellers' appeals and their outcomes, read-only: decided on the desk's appeal page, where the listing and
    examples follow; part of the audit trail."""

    list_display = ("id", "listing", "client", "status", "created_at", "decided_by", "decided_at")
    list_filter = ("status", "client")
    search_fields = ("listing__external_id", "text", "note")
    list_select_related = ("listing", "client", "decided_by")
    date_hierarchy = "created_at"
