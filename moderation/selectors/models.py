"""Which model version is active, as the desk's database mirrors it (`services.model_versions` keeps it in line).

The registry's `active` pointer is what scoring workers serve; the `ModelVersion` row with `is_active` is what the
desk's own reads join on. Every read of "the active model" goes through `active_model`, so there is one answer.
"""

from moderation.models import ModelVersion
from moderation.selectors.settings import get_settings


def active_model() -> ModelVersion | None:
    """The active version's row, or None before any model has been activated."""
    return ModelVersion.objects.filter(is_active=True).first()


def active_model_labels() -> tuple[list[str], list[str]]:
    """Labels and prohibited labels of the active model, or of the thresholds when no model is active yet."""
    active = active_model()
    if active is not None:
        return list(active.labels), list(active.prohibited_labels)
    prohibited = sorted(get_settings().thresholds)
    return prohibited, prohibited
