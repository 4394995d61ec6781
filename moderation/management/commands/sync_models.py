"""`manage.py sync_models`: mirror the model registry into the database and install the training schedules."""

from django.core.management.base import BaseCommand

from moderation.services.model_versions import sync_models
from moderation.services.training.schedules import ensure_training_schedules


class Command(BaseCommand):
    """`manage.py sync_models`: mirror the model registry and install the training schedules."""

    help = "Mirror the classifier registry into ModelVersion rows and create the training beat schedules."

    def handle(self, *args, **options):
        """Mirror the registry, create any missing schedule, and print a one-line summary."""
        result = sync_models()
        created = ensure_training_schedules()
        active = result["active"] or "none"
        self.stdout.write(f"{result['versions']} model versions, active: {active}; {created} schedules created")
