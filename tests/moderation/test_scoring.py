import pytest

from moderation.models import ImageStatus, ListingImage, ListingStatus, ModelVersion, ModerationSettings, Score
from moderation.selectors.settings import get_settings
from moderation.services import queueing, scoring
from tests.support.factories import listing_with
from tests.support.images import BLUE, RED
from tests.support.scoring import always_audit, never_audit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _setup(media_root, queued):
    row = get_settings()
    row.audit_rate = 0.1
    row.save()


def test_routes_by_threshold_and_writes_one_score(fake_scorer):
    listing = listing_with(RED, BLUE)
    red, blue = listing.images.order_by("id")
    outcome = scoring.score_batch(image_ids=[red.pk, blue.pk], scorer=fake_scorer, rng=never_audit)
    assert sorted(outcome.scored) == [red.pk, blue.pk]
    red.refresh_from_db()
    blue.refresh_from_db()
    assert (red.status, red.prohibited_label, red.model_version) == (ImageStatus.FLAGGED, "weapon", "v0001")
    assert red.prohibited_probability > 0.5 and red.flagged_at and red.scored_at
    assert (blue.status, blue.is_audit) == (ImageStatus.CLEARED, False)
    assert blue.cleared_at and blue.prohibited_probability < 0.5
    assert Score.objects.filter(image=red, model_version="v0001").count() == 1
    assert (red.attempts, blue.attempts) == (1, 1)
    listing.refresh_from_db()
    assert listing.status == ListingStatus.IN_REVIEW


def test_one_forward_pass_takes_other_pending_images(fake_scorer, settings):
    first = listing_with(BLUE, external_id="a").images.get()
    others = [listing_with(BLUE, external_id=f"b{i}").images.get() for i in range(4)]
    scoring.score_batch(image_ids=[first.pk], scorer=fake_scorer, batch_size=4, rng=never_audit)
    assert fake_scorer.calls == [4]
    assert ListingImage.objects.filter(status=ImageStatus.CLEARED).count() == 4
    assert ListingImage.objects.get(pk=first.pk).status == ImageStatus.CLEARED
    assert ListingImage.objects.filter(pk__in=[o.pk for o in others], status=ImageStatus.PENDING).count() == 1


def test_attempt_is_counted_before_the_model_runs(fake_scorer):
    image = listing_with(BLUE).images.get()
    seen = []
    fake_scorer.on_predict = lambda _images: seen.append(ListingImage.objects.get(pk=image.pk).attempts)
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    assert seen == [1]


def test_per_label_threshold_decides(fake_scorer):
    row = get_settings()
    row.thresholds = {"weapon": 0.95}
    row.save()
    image = listing_with(RED).images.get()
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    image.refresh_from_db()
    assert 0.5 < image.prohibited_probability < 0.95
    assert image.status == ImageStatus.CLEARED


def test_audit_sample_sends_a_below_threshold_image_to_review(fake_scorer):
    image = listing_with(BLUE).images.get()
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=always_audit)
    image.refresh_from_db()
    assert (image.status, image.is_audit) == (ImageStatus.FLAGGED, True)


def test_redelivered_task_writes_no_second_score(fake_scorer):
    image = listing_with(RED).images.get()
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    again = scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    assert again.scored == []
    assert Score.objects.filter(image=image).count() == 1
    assert fake_scorer.calls == [1]


def test_existing_score_of_the_same_version_wins(fake_scorer):
    image = listing_with(RED).images.get()
    Score.objects.create(
        image=image, model_version="v0001", probabilities={"allowed": 0.99, "weapon": 0.01}, prohibited_probability=0.01
    )
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    image.refresh_from_db()
    assert image.status == ImageStatus.CLEARED
    assert Score.objects.filter(image=image).count() == 1


def test_no_active_model_leaves_images_pending_without_an_attempt(fake_scorer):
    fake_scorer._version = None
    image = listing_with(RED).images.get()
    outcome = scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer)
    image.refresh_from_db()
    assert outcome.no_model
    assert (image.status, image.attempts) == (ImageStatus.PENDING, 0)
    assert fake_scorer.calls == []


def test_a_failing_image_is_isolated_and_retried_then_failed(fake_scorer, queued):
    listing = listing_with(RED, BLUE)
    bad, good = listing.images.order_by("id")
    fake_scorer.fail_on = {bad.file.open("rb").read()}
    max_attempts = get_settings().max_scoring_attempts
    outcome = scoring.score_batch(image_ids=[bad.pk, good.pk], scorer=fake_scorer, rng=never_audit)
    assert outcome.scored == [good.pk]
    assert outcome.retry == [bad.pk]
    bad.refresh_from_db()
    assert bad.status == ImageStatus.PENDING and "cannot decode" in bad.last_error
    for _ in range(max_attempts - 1):
        scoring.score_batch(image_ids=[bad.pk], scorer=fake_scorer, rng=never_audit)
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == (ImageStatus.FAILED, max_attempts)
    assert bad.failed_at and "cannot decode" in bad.last_error
    listing.refresh_from_db()
    # Nothing moves a failed image on by itself: the listing says it needs a person.
    assert listing.status == ListingStatus.NEEDS_ATTENTION


def test_exhausted_attempts_fail_without_running_the_model(fake_scorer):
    image = listing_with(BLUE).images.get()
    ListingImage.objects.filter(pk=image.pk).update(attempts=get_settings().max_scoring_attempts)
    outcome = scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer)
    image.refresh_from_db()
    assert outcome.failed == [image.pk]
    assert image.status == ImageStatus.FAILED and "did not finish" in image.last_error
    assert fake_scorer.calls == []


def test_an_image_attempted_before_is_scored_alone(fake_scorer, queued):
    listing = listing_with(BLUE, BLUE, BLUE)
    ids = list(listing.images.order_by("id").values_list("pk", flat=True))
    ListingImage.objects.filter(pk=ids[1]).update(attempts=1)
    outcome = scoring.score_batch(image_ids=ids, scorer=fake_scorer, rng=never_audit)
    assert fake_scorer.calls == [1]
    assert outcome.scored == [ids[1]]
    assert outcome.requeued == [ids[0], ids[2]]
    assert ListingImage.objects.get(pk=ids[0]).attempts == 0


def test_rescore_after_promotion_clears_with_the_new_version(fake_scorer, queued, django_capture_on_commit_callbacks):
    image = listing_with(RED).images.get()
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    ModelVersion.objects.create(
        version="v0002", labels=["allowed", "weapon"], prohibited_labels=["weapon"], is_active=True
    )
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.rescore_open_images() == 1
    assert queued == [[image.pk]]
    promoted = type(fake_scorer)(version="v0002")
    promoted.probability = lambda data: 0.1
    scoring.score_batch(image_ids=[image.pk], scorer=promoted, rng=never_audit)
    image.refresh_from_db()
    assert (image.status, image.model_version) == (ImageStatus.CLEARED, "v0002")
    assert sorted(image.scores.values_list("model_version", flat=True)) == ["v0001", "v0002"]
    # Rescoring with the same version again is a no-op.
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.rescore_open_images() == 0


def test_sweeper_requeues_only_images_waiting_too_long(
    frozen_clock, queued, settings, django_capture_on_commit_callbacks
):
    settings.VIGIA_PENDING_SWEEP_SECONDS = 60
    old = listing_with(BLUE, external_id="old").images.get()
    frozen_clock.advance(seconds=90)
    listing_with(BLUE, external_id="new")
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.sweep_pending() == 1
    assert queued == [[old.pk]]
    old.refresh_from_db()
    assert old.enqueued_at == frozen_clock.current
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.sweep_pending() == 0


def test_task_scores_with_this_processs_scorer(fake_scorer, monkeypatch):
    from moderation import worker
    from moderation.tasks.scoring import score_images

    monkeypatch.setattr(worker, "get_scorer", lambda: fake_scorer)
    image = listing_with(RED).images.get()
    ModerationSettings.objects.filter(pk=1).update(audit_rate=0)
    assert score_images.run([image.pk]) == {
        "model_version": "v0001",
        "scored": 1,
        "failed": [],
        "retry": [],
        "deferred": [],
    }
    assert ListingImage.objects.get(pk=image.pk).status == ImageStatus.FLAGGED


def test_each_process_builds_its_own_scorer(monkeypatch, settings, tmp_path):
    import os

    from moderation import worker

    settings.VIGIA_MODEL_REGISTRY = tmp_path
    inherited = object()
    monkeypatch.setattr(worker, "_scorer", inherited)
    monkeypatch.setattr(worker, "_owner_pid", os.getpid() + 1)  # as if created before a fork
    scorer = worker.get_scorer()
    assert scorer is not inherited
    assert worker.get_scorer() is scorer
    worker._forget_inherited_scorer()
    assert worker._scorer is None
