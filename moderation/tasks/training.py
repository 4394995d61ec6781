"""Training tasks, thin: they take primary keys and call the training services.

`run_training` and `embed_examples` are routed to the `training` queue (settings.CELERY_TASK_ROUTES) so scoring
never waits behind a retrain or behind the embedding of decided images. The two periodic tasks are scheduled by
django-celery-beat rows that `manage.py sync_models` creates. TensorFlow's thread count is set once per process,
before its first operation, from `VIGIA_TF_THREADS`.
"""

from celery import shared_task

from moderation import outbox, worker
from moderation.services.training import embedding, runs, trigger


@shared_task(name=outbox.RUN_TRAINING, bind=True)
def run_training(self, run_id: int) -> str:
    """Run one queued training. The task id tells a redelivery (the worker died) from a duplicate message."""
    worker.configure_training_threads()
    run = runs.execute_training_run(run_id=run_id, task_id=self.request.id)
    return run.status


@shared_task(name=outbox.EMBED_EXAMPLES, ignore_result=True)
def embed_examples(example_ids: list[int]) -> dict:
    """Embed decided images ahead of the next retrain (training queue; idempotent, the cache is by content)."""
    worker.configure_training_threads()
    return embedding.embed_decision_examples(example_ids=example_ids)


@shared_task(name=outbox.CHECK_TRAINING_TRIGGER)
def check_training_trigger() -> int | None:
    """Beat: retrain when the batch is full, or when anything is new and the schedule is on."""
    run = trigger.check_trigger()
    return run.pk if run else None


@shared_task(name=outbox.SWEEP_TRAINING_RUNS)
def sweep_training_runs() -> dict:
    """Beat: fail runs whose worker stopped beating; re-dispatch a queued run whose message was lost."""
    return runs.sweep_training_runs()
