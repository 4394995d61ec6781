"""Training tasks, thin: they take primary keys and call the training service.

`run_training` and `embed_examples` are routed to the `training` queue (settings.CELERY_TASK_ROUTES) so scoring
never waits behind a retrain or behind the embedding of decided images. The two periodic tasks are scheduled by
django-celery-beat rows that `manage.py sync_models` creates.
"""

from celery import shared_task

from moderation.services import training


@shared_task(name="moderation.run_training", bind=True)
def run_training(self, run_id: int) -> str:
    """Run one queued training. The task id tells a redelivery (the worker died) from a duplicate message."""
    run = training.execute_training_run(run_id, task_id=self.request.id)
    return run.status


@shared_task(name="moderation.embed_examples", ignore_result=True)
def embed_examples(example_ids: list[int]) -> dict:
    """Embed decided images ahead of the next retrain (training queue; idempotent, the cache is by content)."""
    return training.embed_decision_examples(example_ids)


@shared_task(name="moderation.check_training_trigger")
def check_training_trigger() -> int | None:
    """Beat: retrain when the batch is full, or when anything is new and the schedule is on."""
    run = training.check_trigger()
    return run.pk if run else None


@shared_task(name="moderation.sweep_training_runs")
def sweep_training_runs() -> dict:
    """Beat: fail runs whose worker stopped beating; re-dispatch a queued run whose message was lost."""
    return training.sweep_training_runs()
