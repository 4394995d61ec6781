"""The Django app config of the moderation desk: its label and default primary key type."""

from django.apps import AppConfig


class ModerationConfig(AppConfig):
    """The moderation app, shown as "Moderation" in the admin."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "moderation"
    verbose_name = "Moderation"
