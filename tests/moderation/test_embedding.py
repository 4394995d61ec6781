"""Decided images are embedded on the training queue as they are decided, so a retrain embeds nothing new."""

import pytest
from django.db import transaction

from moderation import outbox
from moderation.models import DecisionOutcome, ModerationSettings, TrainingExample, TrainingRunStatus
from moderation.services.training.embedding import embed_decision_examples
from moderation.services.training.runs import execute_training_run
from moderation.services.training.trigger import record_decision, request_training
from tests.support.factories import import_initial_set, make_decision, make_image, make_user
from tests.support.images import ALLOWED, PROHIBITED
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loop_settings")]


@pytest.fixture
def dispatched(settings, published):
    """Example ids handed to the embedding task, recorded instead of queued."""
    settings.VIGIA_EMBED_DECISIONS = True
    return published[outbox.EMBED_EXAMPLES]


def decide(moderator, label: str) -> TrainingExample:
    outcome = DecisionOutcome.CONFIRM if label == PROHIBITED else DecisionOutcome.REJECT
    with transaction.atomic():
        decision = make_decision(make_image(label), moderator, outcome, label)
        record_decision(decision=decision)
    return TrainingExample.objects.get(decision=decision)


def test_each_committed_decision_queues_the_embedding_of_its_example_and_a_rolled_back_one_nothing(dispatched):
    moderator = make_user("mod")
    example = decide(moderator, PROHIBITED)
    assert dispatched == [[example.pk]]

    with pytest.raises(RuntimeError), transaction.atomic():
        record_decision(decision=make_decision(make_image(PROHIBITED), moderator, DecisionOutcome.CONFIRM, PROHIBITED))
        raise RuntimeError("the review transaction fails after the decision")
    assert dispatched == [[example.pk]]


def test_a_broker_outage_loses_no_decision(settings, monkeypatch):
    from moderation.tasks import training as tasks

    settings.VIGIA_EMBED_DECISIONS = True

    def broker_down(*args, **kwargs):
        raise ConnectionError("Redis is restarting")

    monkeypatch.setattr(tasks.embed_examples, "delay", broker_down)
    example = decide(make_user("mod"), PROHIBITED)
    assert example.active and TrainingExample.objects.count() == 1


def test_embedding_skips_gone_inactive_missing_and_broken_images_without_failing(dispatched, settings):
    from pathlib import Path

    moderator = make_user("mod")
    gone, inactive, missing, broken, good = (decide(moderator, PROHIBITED) for _ in range(5))
    gone_id = gone.pk
    gone.delete()
    TrainingExample.objects.filter(pk=inactive.pk).update(active=False)
    Path(settings.MEDIA_ROOT, missing.path).unlink()
    Path(settings.MEDIA_ROOT, broken.path).write_bytes(b"not an image at all")

    report = embed_decision_examples(example_ids=[gone_id, inactive.pk, missing.pk, broken.pk, good.pk])

    # Only the good image is embedded; the broken one is left for the retrain to report, nothing raises.
    assert report == {"embedded": 1, "cached": 0, "skipped": 1}


@pytest.mark.slow
def test_decisions_embedded_ahead_leave_the_retrain_and_its_gate_nothing_to_embed(tmp_path, dispatched, rescores):
    import_initial_set(tmp_path, per_label=12)
    first = execute_training_run(run_id=request_training(dispatch=False).pk)
    assert first.status == TrainingRunStatus.SUCCEEDED, first.reason
    ModerationSettings.objects.update_or_create(pk=1, defaults={"holdout_share": 0.5, "gate_min_holdout_per_label": 3})
    moderator = make_user("mod")
    examples = [decide(moderator, label) for label in (PROHIBITED, ALLOWED) * 12]
    assert dispatched == [[example.pk] for example in examples]
    holdout = [example for example in examples if example.is_holdout]
    assert 0 < len(holdout) < len(examples)

    report = embed_decision_examples(example_ids=[pk for call in dispatched for pk in call])
    again = embed_decision_examples(example_ids=[examples[0].pk])
    run = execute_training_run(run_id=request_training(dispatch=False).pk)

    assert report == {"embedded": len(examples), "cached": 0, "skipped": 0}
    assert (again["embedded"], again["cached"]) == (0, 1)
    assert run.status in (TrainingRunStatus.SUCCEEDED, TrainingRunStatus.REJECTED), run.reason
    assert run.new_examples == len(examples) - len(holdout)
    assert run.metrics["embedded"] == 0 and run.metrics["cached"] == run.total_examples
    assert run.gate["active"] is not None and run.gate["embedded"] == 0


@pytest.mark.worker
@pytest.mark.timeout(180)
def test_a_real_training_worker_embeds_each_decided_image_after_the_commit(training_worker, settings):
    settings.VIGIA_EMBED_DECISIONS = True
    settings.MEDIA_ROOT = training_worker.media
    settings.VIGIA_MODEL_REGISTRY = training_worker.models
    cache = training_worker.work / "feature-cache"
    settings.VIGIA_FEATURE_CACHE = cache
    moderator = make_user("mod")
    examples = [decide(moderator, PROHIBITED), decide(moderator, ALLOWED)]

    def embedded(example) -> bool:
        return any(cache.rglob(f"{example.sha256}.npy"))

    wait_until(
        lambda: all(embedded(example) for example in examples),
        timeout=90,
        what="the decided images to be embedded",
        worker=training_worker,
    )
    assert "moderation.embed_examples" in training_worker.log.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_a_retrain_embeds_new_images_with_the_active_version_s_litert_extractor_unless_keras_is_forced(
    tmp_path, settings, rescores, runtime
):
    settings.VIGIA_RUNTIME = runtime
    import_initial_set(tmp_path, per_label=8)
    first = execute_training_run(run_id=request_training(dispatch=False).pk)
    assert first.status == TrainingRunStatus.SUCCEEDED and first.metrics["embedding_runtime"] == "keras"
    moderator = make_user("mod")
    for label in (PROHIBITED, ALLOWED) * 4:
        decide(moderator, label)
    run = execute_training_run(run_id=request_training(dispatch=False).pk)
    assert run.status in (TrainingRunStatus.SUCCEEDED, TrainingRunStatus.REJECTED), run.reason
    assert run.metrics["embedded"] > 0 and run.metrics["embedding_runtime"] == runtime
