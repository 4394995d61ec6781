"""A training run end to end with the tiny backbone: train, register, gate, promote; and every way it fails."""

import pytest
from django.db import transaction

from moderation import outbox
from moderation.models import ModelVersion, TrainingExample, TrainingRun, TrainingRunStatus, TrainingTrigger
from moderation.services.model_versions import get_registry
from moderation.services.training import runs
from moderation.services.training.runs import execute_training_run, sweep_training_runs
from moderation.services.training.trigger import request_training
from tests.support.factories import import_initial_set
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loop_settings")]


def queued_run(trigger=TrainingTrigger.MANUAL) -> TrainingRun:
    return request_training(trigger=trigger, dispatch=False)


@pytest.mark.slow
def test_first_run_trains_registers_and_promotes_the_first_model(tmp_path, rescores):
    import_initial_set(tmp_path, per_label=12)
    run = execute_training_run(run_id=queued_run(TrainingTrigger.INITIAL).pk)

    assert run.status == TrainingRunStatus.SUCCEEDED, run.reason
    assert run.model_version == "v0001"
    assert (run.new_examples, run.total_examples) == (24, 24)
    assert run.started_at <= run.finished_at and run.heartbeat_at is not None
    assert run.phase == "done" and run.metrics["accuracy"] >= 0.9
    assert run.metrics["embedded"] + run.metrics["cached"] > 0
    assert "No model was active" in run.gate["reason"]
    version = ModelVersion.objects.get()
    assert (version.version, version.is_active, version.training_run) == ("v0001", True, run)
    assert version.prohibited_labels == ["bad"] and sorted(version.labels) == ["bad", "ok"]
    assert get_registry().active_version() == "v0001"
    assert rescores == ["rescore"]
    # Label lineage: every example records the run that first used it.
    assert set(TrainingExample.objects.values_list("used_in_run", flat=True)) == {run.pk}

    second = execute_training_run(run_id=queued_run().pk)
    assert second.new_examples == 0 and second.total_examples == 24
    # The bottleneck cache means the second run embeds nothing it has seen.
    assert second.metrics["embedded"] == 0 and second.metrics["cached"] > 0
    assert set(TrainingExample.objects.values_list("used_in_run", flat=True)) == {run.pk}


@pytest.mark.slow
def test_progress_is_written_to_the_run_while_it_trains(tmp_path, monkeypatch, rescores):
    import_initial_set(tmp_path, per_label=6)
    seen: list[tuple[str, int, int]] = []
    writer_call = runs._ProgressWriter.__call__

    def spy(self, phase, current, total):
        writer_call(self, phase, current, total)
        row = TrainingRun.objects.get(pk=self.run_id)
        seen.append((row.phase, row.progress_current, row.progress_total))

    monkeypatch.setattr(runs._ProgressWriter, "__call__", spy)
    execute_training_run(run_id=queued_run(TrainingTrigger.INITIAL).pk)
    phases = [phase for phase, _, _ in seen]
    assert {"embedding", "training", "saving", "gate"} <= set(phases)
    assert any(phase == "training" and total > 0 and current <= total for phase, current, total in seen)


@pytest.mark.slow
def test_an_exception_ends_the_run_failed_and_leaves_the_active_model(tmp_path, monkeypatch, rescores):
    import_initial_set(tmp_path, per_label=6)
    execute_training_run(run_id=queued_run(TrainingTrigger.INITIAL).pk)
    import classifier.training

    def explode(*args, **kwargs):
        raise MemoryError("out of memory while embedding")

    monkeypatch.setattr(classifier.training, "train_model", explode)
    run = execute_training_run(run_id=queued_run().pk)
    assert run.status == TrainingRunStatus.FAILED
    assert "MemoryError: out of memory while embedding" in run.reason and run.finished_at is not None
    assert ModelVersion.objects.get(is_active=True).version == "v0001"
    assert get_registry().active_version() == "v0001"
    assert rescores == ["rescore"]


def test_a_run_redelivered_after_its_worker_died_ends_failed_and_changes_nothing(tmp_path, rescores):
    import_initial_set(tmp_path, per_label=6)
    run = queued_run(TrainingTrigger.INITIAL)
    assert runs._start_run(run.pk, "task-1") is not None  # the worker started it, then was killed
    # A duplicate message with another id does not touch a run another worker is running.
    assert execute_training_run(run_id=run.pk, task_id="task-2").status == TrainingRunStatus.RUNNING
    # The same message handed back (reject on worker lost) means the worker died.
    after = execute_training_run(run_id=run.pk, task_id="task-1")
    assert after.status == TrainingRunStatus.FAILED and "lost" in after.reason
    assert not ModelVersion.objects.exists() and get_registry().active_version() is None
    assert rescores == []


@pytest.mark.slow
def test_sweeper_fails_a_run_without_heartbeat_and_a_late_finish_cannot_promote(
    tmp_path, frozen_clock, monkeypatch, rescores, settings, published
):
    import_initial_set(tmp_path, per_label=6)
    run = queued_run(TrainingTrigger.INITIAL)
    runs._start_run(run.pk, "task-1")
    assert sweep_training_runs()["failed"] == 0
    frozen_clock.advance(seconds=settings.VIGIA_TRAINING_STALE_SECONDS + 1)
    dispatched = published[outbox.RUN_TRAINING]
    waiting = request_training(trigger=TrainingTrigger.MANUAL)
    assert dispatched == [waiting.pk]
    dispatched.clear()
    assert sweep_training_runs() == {"failed": 1, "redispatched": 1}
    assert dispatched == [waiting.pk, waiting.pk]  # once when the dead run ended, once by the sweep itself
    failed = TrainingRun.objects.get(pk=run.pk)
    assert failed.status == TrainingRunStatus.FAILED and "heartbeat" in failed.reason

    # The original worker was only slow: its finishing transaction sees the verdict and promotes nothing.
    with transaction.atomic():
        TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRunStatus.FAILED)
    monkeypatch.setattr(runs, "_start_run", lambda run_id, task_id: TrainingRun.objects.get(pk=run_id))
    execute_training_run(run_id=run.pk)
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRunStatus.FAILED
    assert get_registry().active_version() is None
    assert not ModelVersion.objects.filter(is_active=True).exists()


@pytest.mark.worker
@pytest.mark.timeout(180)
def test_a_run_whose_worker_child_is_killed_mid_training_ends_failed_and_changes_nothing(
    training_worker, settings, tmp_path
):
    """A real worker: SIGKILL its child while it trains; the message comes back and the run ends `failed`."""
    import os
    import signal

    settings.MEDIA_ROOT = training_worker.media
    settings.VIGIA_MODEL_REGISTRY = training_worker.models
    import_initial_set(tmp_path, per_label=6)
    run = request_training(trigger=TrainingTrigger.INITIAL)  # queued on commit to the real worker

    wait_until(
        lambda: TrainingRun.objects.get(pk=run.pk).phase in ("cross-validating", "training"),
        timeout=90,
        what="the run to reach training",
        worker=training_worker,
    )
    pid = TrainingRun.objects.get(pk=run.pk).metrics["worker"]["pid"]
    assert pid != training_worker.pid  # the child, not the worker's parent process
    os.kill(pid, signal.SIGKILL)

    wait_until(
        lambda: TrainingRun.objects.get(pk=run.pk).status == TrainingRunStatus.FAILED,
        timeout=90,
        what="the run to fail",
        worker=training_worker,
    )
    failed = TrainingRun.objects.get(pk=run.pk)
    assert "lost" in failed.reason and failed.finished_at is not None
    assert get_registry().active_version() is None
    assert not ModelVersion.objects.exists()


@pytest.mark.slow
def test_retrain_command_runs_a_training_synchronously_and_prints_it(tmp_path, rescores, capsys):
    import json

    from django.core.management import call_command

    import_initial_set(tmp_path, per_label=6)
    call_command("retrain")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = TrainingRun.objects.get(pk=printed["run"])
    assert (printed["status"], printed["model_version"]) == ("succeeded", "v0001")
    assert run.trigger == TrainingTrigger.INITIAL and run.status == TrainingRunStatus.SUCCEEDED
    assert get_registry().active_version() == "v0001"
