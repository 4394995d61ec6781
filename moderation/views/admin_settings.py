"""The admin's settings page: targets and thresholds, batch size, leases, audit and QA rates, holdout and gate,
schedule, appeal window; and the webhook endpoints that are failing or were disabled, so an admin sees a
marketplace that stopped hearing back.

It also answers the questions admins ask before changing a knob: how many confirmations until the next retrain,
what the last recalibration changed (old and new thresholds, and why auto-action is off for a label), how precise
the automated takedowns have measured in QA, and what a threshold would do: the what-if plot for the active model
and the preview from past decisions.
"""

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods

from moderation.models import ModerationSettings
from moderation.permissions import admin_required, recent_login_required
from moderation.selectors import training as selectors
from moderation.selectors.calibration import auto_precision
from moderation.selectors.models import active_model, active_model_labels
from moderation.selectors.settings import get_settings
from moderation.selectors.webhooks import endpoints_needing_attention
from moderation.selectors.whatif import whatif
from moderation.services.settings import update_settings
from moderation.views import whatif_svg

THRESHOLD_PREFIX = "threshold__"
AUTO_PREFIX = "auto__"
PIN_PREFIX = "pin__"
LABEL_PREFIXES = (THRESHOLD_PREFIX, AUTO_PREFIX, PIN_PREFIX)


class SettingsForm(forms.ModelForm):
    """The settings row, plus per prohibited label the active model knows: both thresholds and the pin.

    A threshold changed by hand pins its label, so the next recalibration keeps it; unticking the pin (with the
    thresholds left as they are) hands the label back to recalibration.
    """

    class Meta:
        model = ModerationSettings
        fields = [
            "precision_target",
            "recall_target",
            "qa_rate",
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
        self.labels = list(prohibited_labels)
        self.before = {
            label: (self.instance.thresholds.get(label), self.instance.auto_thresholds.get(label))
            for label in self.labels
        }
        for label in self.labels:
            self.fields[THRESHOLD_PREFIX + label] = forms.FloatField(
                label=f"Review threshold for {label}",
                min_value=0.0,
                max_value=1.0,
                required=False,
                initial=self.instance.thresholds.get(label),
                help_text="At or above it an image waits for review. Empty: use the default threshold.",
            )
            self.fields[AUTO_PREFIX + label] = forms.FloatField(
                label=f"Auto-action threshold for {label}",
                min_value=0.0,
                max_value=1.0,
                required=False,
                initial=self.instance.auto_thresholds.get(label),
                help_text="At or above it the model takes the image down on its own. Empty: auto-action off.",
            )
            self.fields[PIN_PREFIX + label] = forms.BooleanField(
                label=f"Pin the thresholds of {label}",
                required=False,
                initial=label in self.instance.pinned_labels,
                help_text="Pinned: recalibration after a new model keeps these thresholds. Changing one pins it.",
            )

    def label_groups(self):
        """Per label: its review threshold, auto-action threshold and pin fields, shown together."""
        return [
            {"label": label, "fields": [self[prefix + label] for prefix in LABEL_PREFIXES]} for label in self.labels
        ]

    def threshold_fields(self):
        """Every per-label field, in label order."""
        return [field for group in self.label_groups() for field in group["fields"]]

    def other_fields(self):
        """Every field of the settings row itself, in the order of `Meta.fields`."""
        return [self[name] for name in self.fields if not name.startswith(LABEL_PREFIXES)]

    def clean(self):
        """An auto-action threshold below the review threshold would leave nothing for review: refuse it."""
        data = super().clean()
        for label in self.labels:
            review, auto = data.get(THRESHOLD_PREFIX + label), data.get(AUTO_PREFIX + label)
            if review is not None and auto is not None and auto < review:
                self.add_error(AUTO_PREFIX + label, "The auto-action threshold cannot be below the review threshold.")
        return data

    def values(self) -> dict:
        """The form's fields as the settings service takes them: each field; thresholds, auto and pins as wholes."""
        values = {name: value for name, value in self.cleaned_data.items() if not name.startswith(LABEL_PREFIXES)}
        thresholds = dict(self.instance.thresholds)
        autos = dict(self.instance.auto_thresholds)
        reasons = dict(self.instance.auto_off_reasons)
        pinned = [label for label in self.instance.pinned_labels if label not in self.labels]
        for label in self.labels:
            review, auto = self.cleaned_data[THRESHOLD_PREFIX + label], self.cleaned_data[AUTO_PREFIX + label]
            for store, value in ((thresholds, review), (autos, auto)):
                if value is None:
                    store.pop(label, None)
                else:
                    store[label] = value
            if auto is not None:
                reasons.pop(label, None)
            changed = (review, auto) != self.before[label]
            if changed and auto is None and self.before[label][1] is not None:
                reasons[label] = "Switched off by hand."
            if self.cleaned_data[PIN_PREFIX + label] or changed:
                pinned.append(label)
        values.update(thresholds=thresholds, auto_thresholds=autos, auto_off_reasons=reasons, pinned_labels=pinned)
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


def _calibration(settings_row: ModerationSettings) -> dict | None:
    """The last recalibration as the page shows it: per label, thresholds before and after, and why."""
    last = settings_row.last_calibration or {}
    if not last:
        return None
    before, after, derived = last.get("before", {}), last.get("after", {}), last.get("derived", {})
    rows = []
    for label in sorted(derived):
        rows.append(
            {
                "label": label,
                "review_before": before.get("thresholds", {}).get(label),
                "review_after": after.get("thresholds", {}).get(label),
                "auto_before": before.get("auto_thresholds", {}).get(label),
                "auto_after": after.get("auto_thresholds", {}).get(label),
                "pinned": label in last.get("pinned", []),
                "auto_reason": derived[label].get("auto_reason", ""),
                "review_reason": derived[label].get("review_reason", ""),
            }
        )
    return {**last, "rows": rows}


def _plots(settings_row: ModerationSettings) -> list[dict]:
    """The what-if curves of the active model, one SVG per prohibited label, with today's numbers."""
    version = active_model()
    if version is None:
        return []
    plots = []
    for label in version.prohibited_labels:
        curves = whatif(version=version, label=label, settings_row=settings_row)
        plots.append(
            {"label": label, "svg": mark_safe(whatif_svg.render(curves)), "today": curves["today"], "curves": curves}
        )
    return plots


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
            "calibration": _calibration(settings_row),
            "auto_off_reasons": sorted(settings_row.auto_off_reasons.items()),
            "auto_precision": auto_precision(),
            "plots": _plots(settings_row),
        },
    )
