"""The one read of the admin's settings row, shared by every service and page that needs a knob."""

from moderation.models import ModerationSettings


def get_settings() -> ModerationSettings:
    """The settings row, created with defaults on first use so a fresh install works without setup."""
    settings_row, _ = ModerationSettings.objects.get_or_create(pk=1)
    return settings_row
