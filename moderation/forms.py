"""Browser forms of the review desk. They only parse and check input; services do the writing."""

from django import forms
from django.conf import settings

from moderation.models import Client, DecisionOutcome, EventType, PolicyCategory
from moderation.services.appeals import NOTE_LIMIT, OVERTURN, UPHOLD
from moderation.validation import ImageValidationError, validate_image

# Categories that describe a violation; "none" only makes sense for a rejected flag.
VIOLATION_CATEGORIES = [(value, label) for value, label in PolicyCategory.choices if value != PolicyCategory.NONE]


class DecisionForm(forms.Form):
    """Confirm or reject, with a policy category for confirmations and an optional note for the audit trail."""

    outcome = forms.ChoiceField(choices=DecisionOutcome.choices)
    policy_category = forms.ChoiceField(
        choices=VIOLATION_CATEGORIES, initial=PolicyCategory.PROHIBITED_ITEM, required=False
    )
    note = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean(self):
        """Settle the category: "none" for a rejection, the generic prohibited item for a confirmation without one."""
        data = super().clean()
        if data.get("outcome") == DecisionOutcome.REJECT:
            # A rejected flag is a false positive: whatever the select showed, no policy was violated.
            data["policy_category"] = PolicyCategory.NONE
        elif not data.get("policy_category"):
            data["policy_category"] = PolicyCategory.PROHIBITED_ITEM
        return data


class MultipleImageInput(forms.ClearableFileInput):
    """A file input that lets the browser select several files at once."""

    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """A file field that returns every selected file; each is validated by content in the view's service call."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleImageInput(attrs={"accept": "image/jpeg,image/png,image/webp"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        """Clean each selected file on its own and return them as a list."""
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)] if data else single(data, initial)


class UploadForm(forms.Form):
    """A staff upload: one listing with one or more photos, checked exactly like the API checks them."""

    external_id = forms.CharField(max_length=200, help_text="The marketplace's id for this listing.")
    title = forms.CharField(max_length=500, required=False)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    images = MultipleImageField(help_text="JPEG, PNG or WebP.")

    def clean_images(self):
        """Refuse too many photos, and name every bad one at once so the sender can fix them in one go."""
        files = self.cleaned_data["images"]
        limit = settings.VIGIA_MAX_IMAGES_PER_LISTING
        if len(files) > limit:
            raise forms.ValidationError(f"At most {limit} images per listing.")
        errors = []
        for uploaded in files:
            try:
                validate_image(uploaded)
            except ImageValidationError as exc:
                errors.append(forms.ValidationError(f"{uploaded.name}: {exc.detail}", code=exc.code))
            finally:
                uploaded.seek(0)
        if errors:
            raise forms.ValidationError(errors)
        return files


class AppealDecisionForm(forms.Form):
    """Uphold or overturn an appeal, with the reasons: the note goes to the marketplace for its seller."""

    outcome = forms.ChoiceField(choices=[(UPHOLD, "Uphold"), (OVERTURN, "Overturn")])
    note = forms.CharField(
        max_length=NOTE_LIMIT,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Sent to the marketplace with the outcome, for the seller: say why.",
    )


class WebhookEndpointForm(forms.Form):
    """A new webhook endpoint: whose, where, which events (none ticked: every type) and a note for admins."""

    client = forms.ModelChoiceField(queryset=None, empty_label=None)
    url = forms.CharField(
        label="URL", max_length=500, help_text="https://, on a public address (checked again before every request)."
    )
    event_types = forms.MultipleChoiceField(
        choices=[(value, f"{value}: {label}") for value, label in EventType.choices if value != EventType.TEST],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Tick none to receive every type.",
    )
    description = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["client"].queryset = Client.objects.order_by("name")
