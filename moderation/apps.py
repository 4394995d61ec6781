"""The Django app config of the moderation desk: its label and default primary key type."""

from django.apps import AppConfig


class ModerationConfig(AppConfig):
    """The moderation app, shown as "Moderation" in the admin."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "moderation"
    verbose_name = "Moderation"

    def ready(self):
        """Audit failed logins (Django's auth has no service of ours to write them) and stamp successful ones."""
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from moderation import signals

        user_login_failed.connect(signals.login_failed, dispatch_uid="vigia-login-failed")
        user_logged_in.connect(signals.logged_in, dispatch_uid="vigia-logged-in")
