"""The admin's settings page: thresholds, batch size, leases, audit rate, holdout and gate, schedule, appeal window;
and the webhook endpoints that are failing or were disabled, so an admin sees a marketplace that stopped hearing
back.

It also answers the two questions admins ask before changing a knob: how many confirmations until the next
retrain, and what a threshold would do (queue share, precision and recall estimated from past decisions).
"""

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from moderation.models import ModerationSettings
from moderation.permissions import admin_required, recent_login_required
from moderation.selectors import training as selectors
from moderation.selectors.models import active_model_labels
from moderation.selectors.settings import get_settings
from moderation.selectors.webhooks import endpoints_needing_attention
from moderation.services.settings import update_settings

THRESHOLD_PREFIX = "threshold__"


class SettingsForm(forms.ModelForm):
    """The settings row, plus one threshold field per prohibited label the active model knows."""

    class Meta:
        model = ModerationSettings
        fields = [
            "default_threshold",
            "retrain_batch_size",
            "claim_lease_seconds",
            "max_scoring_attempts",
            "audit_rate",
            "audit_sampling",
            "holdout_share",
            "gate_metric",
            "gate_precision_margin",
            "gate_tolerance",
            "gate_min_holdout_per_label",
            "retrain_on_schedule",
            "appeal_window_days",
        ]

    def __init__(self, *args, prohibited_labels: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        for label in prohibited_labels:
            self.fields[THRESHOLD_PREFIX + label] = forms.FloatField(
                label=f"Threshold for {label}",
                min_value=0.0,
                max_value=1.0,
                required=False,
                initial=self.instance.thresholds.get(label),
                help_text="Empty: use the default threshold.",
            )

    def threshold_fields(self):
        """The per-label threshold fields, which the page shows as a group of their own."""
        return [self[name] for name in self.fields if name.startswith(THRESHOLD_PREFIX)]

    def other_fields(self):
        """Every field of the settings row itself, in the order of `Meta.fields`."""
        return [self[name] for name in self.fields if not name.startswith(THRESHOLD_PREFIX)]

    def values(self) -> dict:
        """The form's fields as the settings service takes them: each field, and `thresholds` as one dict."""
        values = {name: value for name, value in self.cleaned_data.items() if not name.startswith(THRESHOLD_PREFIX)}
        thresholds = dict(self.instance.thresholds)
        for name, value in self.cleaned_data.items():
            if name.startswith(THRESHOLD_PREFIX):
                label = name.removeprefix(THRESHOLD_PREFIX)
                if value is None:
                    thresholds.pop(label, None)
                else:
                    thresholds[label] = value
        values["thresholds"] = thresholds
        return values


def _prohibited_labels(settings_row: ModerationSettings) -> list[str]:
    _, prohibited = active_model_labels()
    return sorted(set(prohibited) | set(settings_row.thresholds))


def _preview(request, settings_row: ModerationSettings) -> dict | None:
    raw = request.GET.get("preview")
    if raw in (None, ""):
        return None
    try:
        threshold = float(raw)
    except ValueError:
        return {"error": "Enter a number between 0 and 1."}
    if not 0.0 <= threshold <= 1.0:
        return {"error": "Enter a number between 0 and 1."}
    label = request.GET.get("label") or None
    if label is not None and label not in _prohibited_labels(settings_row):
        label = None
    return selectors.threshold_preview(threshold, label)


@admin_required
@recent_login_required
@require_http_methods(["GET", "POST"])
def settings_view(request):
    """Let an admin change the settings, next to the trigger's progress and a preview of what a threshold would do."""
    settings_row = get_settings()
    prohibited = _prohibited_labels(settings_row)
    if request.method == "POST":
        form = SettingsForm(request.POST, instance=settings_row, prohibited_labels=prohibited)
        if form.is_valid():
            update_settings(values=form.values())
            messages.success(request, "Settings saved.")
            return redirect("moderation-settings")
    else:
        form = SettingsForm(instance=settings_row, prohibited_labels=prohibited)
    return render(
        request,
        "moderation/training/settings.html",
        {
            "form": form,
            "trigger": selectors.trigger_status(),
            "preview": _preview(request, settings_row),
            "preview_value": request.GET.get("preview", ""),
            "prohibited_labels": prohibited,
            "webhook_alerts": endpoints_needing_attention(),
        },
    )
