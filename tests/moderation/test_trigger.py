"""The retrain trigger: exactly one run per crossed batch, a schedule, a button, one run at a time."""

import threading

import pytest
from django.db import connection, transaction

from moderation import outbox
from moderation.models import DecisionOutcome, TrainingRun, TrainingRunStatus, TrainingState, TrainingTrigger
from moderation.selectors.settings import get_settings
from moderation.selectors.training import trigger_status
from moderation.services.training.runs import execute_training_run
from moderation.services.training.trigger import check_trigger, record_decision, request_training, withdraw_decision
from tests.support.factories import make_decision, make_image, make_user
from tests.support.images import ALLOWED


@pytest.fixture
def dispatched(published):
    """Run ids handed to Celery (recorded instead of sent)."""
    return published[outbox.RUN_TRAINING]


def set_batch_size(size: int, **extra) -> None:
    settings_row = get_settings()
    settings_row.retrain_batch_size = size
    for key, value in extra.items():
        setattr(settings_row, key, value)
    settings_row.save()


def decide(image, moderator, outcome):
    with transaction.atomic():
        decision = make_decision(image, moderator, outcome, None)
        return record_decision(decision=decision)


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_batch_size_confirmations_create_one_queued_run_on_commit(dispatched, django_capture_on_commit_callbacks):
    set_batch_size(3)
    moderator = make_user("mod")
    with django_capture_on_commit_callbacks(execute=True):
        decide(make_image(), moderator, DecisionOutcome.CONFIRM)
        decide(make_image(ALLOWED), moderator, DecisionOutcome.REJECT)
        decide(make_image(), moderator, DecisionOutcome.CONFIRM)
    assert not TrainingRun.objects.exists()
    assert trigger_status().remaining == 1

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = decide(make_image(), moderator, DecisionOutcome.CONFIRM)
    assert run is not None and run.status == TrainingRunStatus.QUEUED and run.trigger == TrainingTrigger.BATCH
    assert len(callbacks) == 1 and dispatched == [run.pk]
    state = TrainingState.objects.get()
    assert (state.confirmed_since_last_run, state.last_run) == (0, run)
    assert trigger_status().remaining == 3


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_rolled_back_decision_queues_nothing(dispatched, django_capture_on_commit_callbacks):
    set_batch_size(1)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        record_decision(decision=make_decision(make_image(), make_user("mod"), DecisionOutcome.CONFIRM, None))
        raise RuntimeError("the review transaction failed")
    assert dispatched == []
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_a_trigger_while_a_run_is_queued_reuses_it_and_one_while_running_queues_one_that_waits(dispatched):
    set_batch_size(1)
    moderator = make_user("mod")
    first = decide(make_image(), moderator, DecisionOutcome.CONFIRM)
    again = decide(make_image(), moderator, DecisionOutcome.CONFIRM)
    assert again == first
    assert TrainingRun.objects.count() == 1

    TrainingRun.objects.filter(pk=first.pk).update(status=TrainingRunStatus.RUNNING)
    waiting = decide(make_image(), moderator, DecisionOutcome.CONFIRM)
    assert waiting != first and waiting.status == TrainingRunStatus.QUEUED
    # The queued run does not start while the other runs: its task returns and leaves it queued.
    assert execute_training_run(run_id=waiting.pk).status == TrainingRunStatus.QUEUED
    assert TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).count() == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_undone_confirmation_gives_its_count_back(dispatched):
    set_batch_size(5)
    moderator = make_user("mod")
    image = make_image()
    with transaction.atomic():
        decision = make_decision(image, moderator, DecisionOutcome.CONFIRM, None)
        record_decision(decision=decision)
    assert TrainingState.objects.get().confirmed_since_last_run == 1
    with transaction.atomic():
        withdraw_decision(decision=decision)
    assert TrainingState.objects.get().confirmed_since_last_run == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_scheduled_check_retrains_only_when_something_is_new(dispatched, django_capture_on_commit_callbacks):
    set_batch_size(100)
    assert check_trigger() is None
    decide(make_image(ALLOWED), make_user("mod"), DecisionOutcome.REJECT)

    set_batch_size(100, retrain_on_schedule=False)
    assert check_trigger() is None

    set_batch_size(100, retrain_on_schedule=True)
    with django_capture_on_commit_callbacks(execute=True):
        run = check_trigger()
    assert run is not None and run.trigger == TrainingTrigger.SCHEDULE
    assert dispatched == [run.pk]
    # Nothing new since that run was created: the next tick does nothing.
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRunStatus.SUCCEEDED)
    state = TrainingState.objects.get()
    assert state.new_examples_since_last_run == 0
    from moderation.models import TrainingExample

    TrainingExample.objects.update(used_in_run=run)
    assert check_trigger() is None


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_scheduled_check_fires_the_batch_trigger_after_the_batch_size_was_lowered(dispatched):
    set_batch_size(10, retrain_on_schedule=False)
    moderator = make_user("mod")
    for _ in range(3):
        decide(make_image(), moderator, DecisionOutcome.CONFIRM)
    set_batch_size(3, retrain_on_schedule=False)
    run = check_trigger()
    assert run is not None and run.trigger == TrainingTrigger.BATCH


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_retrain_now_creates_a_manual_run_for_the_admin(dispatched):
    admin = make_user("boss", is_superuser=True)
    run = request_training(trigger=TrainingTrigger.MANUAL, user=admin)
    assert (run.trigger, run.requested_by, run.status) == (TrainingTrigger.MANUAL, admin, TrainingRunStatus.QUEUED)
    assert request_training(trigger=TrainingTrigger.MANUAL, user=admin) == run


def test_training_task_is_named_and_routed_to_the_training_queue(settings):
    from moderation.tasks.training import check_training_trigger, run_training, sweep_training_runs

    assert run_training.name == "moderation.run_training"
    assert settings.CELERY_TASK_ROUTES["moderation.run_training"] == {"queue": "training"}
    assert check_training_trigger.name == "moderation.check_training_trigger"
    assert sweep_training_runs.name == "moderation.sweep_training_runs"


@pytest.mark.django_db
@pytest.mark.usefixtures("loop_settings")
def test_sync_models_installs_editable_beat_schedules_once():
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    call_command("sync_models")
    tasks = {task.task: task for task in PeriodicTask.objects.all()}
    assert set(tasks) >= {"moderation.check_training_trigger", "moderation.sweep_training_runs"}
    schedule = tasks["moderation.check_training_trigger"]
    schedule.enabled = False
    schedule.save()
    call_command("sync_models")
    assert PeriodicTask.objects.filter(task="moderation.check_training_trigger").count() == 1
    assert PeriodicTask.objects.get(task="moderation.check_training_trigger").enabled is False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("loop_settings")
def test_fifty_concurrent_confirmations_crossing_the_batch_create_exactly_one_run(dispatched):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (DATABASE_URL)")
    set_batch_size(50)
    moderator = make_user("mod")
    images = [make_image() for _ in range(60)]
    barrier = threading.Barrier(len(images))
    errors: list[BaseException] = []

    def confirm(image):
        try:
            barrier.wait(timeout=30)
            decide(image, moderator, DecisionOutcome.CONFIRM)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm, args=(image,)) for image in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    runs = list(TrainingRun.objects.all())
    assert len(runs) == 1 and runs[0].trigger == TrainingTrigger.BATCH
    assert dispatched == [runs[0].pk]
    # 60 confirmations, batch of 50: one run, and the 10 after it count towards the next batch.
    assert TrainingState.objects.get().confirmed_since_last_run == 10
