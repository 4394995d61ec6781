"""`manage.py retrain`: run a training now, in this process, for operators (the same service the worker runs)."""

import json

from django.core.management.base import BaseCommand, CommandError

from moderation.models import TrainingRunStatus, TrainingTrigger
from moderation.selectors.models import active_model
from moderation.services.training.runs import execute_training_run
from moderation.services.training.trigger import request_training


class Command(BaseCommand):
    """`manage.py retrain`: run one training now, in this process."""

    help = "Queue-or-reuse a training run and execute it synchronously; prints the run as JSON on the last line."

    def handle(self, *args, **options):
        """Queue a run (initial when no model is active) or reuse the queued one, execute it, print it as JSON."""
        trigger = TrainingTrigger.MANUAL if active_model() is not None else TrainingTrigger.INITIAL
        run = request_training(trigger=trigger, dispatch=False)
        run = execute_training_run(run_id=run.pk)
        if run.status == TrainingRunStatus.QUEUED:
            raise CommandError(f"Run {run.pk} is waiting for another run that is still running.")
        self.stdout.write(
            json.dumps({"run": run.pk, "status": run.status, "model_version": run.model_version, "reason": run.reason})
        )
        if run.status == TrainingRunStatus.FAILED:
            raise CommandError(run.reason)
