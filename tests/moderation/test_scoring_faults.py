"""Scoring when things go wrong around the model: the forward pass outside any transaction, what changes under it,
infrastructure errors (attempt given back, retried with backoff), leases of tasks that died or ran out of time."""

import os
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError, connection, transaction

from moderation.models import Event, EventType, ImageStatus, ListingImage, ListingStatus, Score
from moderation.selectors.settings import get_settings
from moderation.services import leases, queueing, routing, scoring
from moderation.services.listings import withdraw_listing
from tests.support.factories import listing_with
from tests.support.images import BLUE, RED
from tests.support.scoring import never_audit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _setup(media_root, queued, audit_off, settings):
    settings.VIGIA_SCORING_RETRY_SECONDS = 30
    settings.VIGIA_SCORING_RETRY_MAX_SECONDS = 100


def scored_events(image) -> int:
    return Event.objects.filter(type=EventType.IMAGE_SCORED, data__image_id=image.pk).count()


@pytest.mark.django_db(transaction=True)
def test_the_forward_pass_runs_with_no_transaction_open(fake_scorer):
    image = listing_with(RED).images.get()
    seen = []
    fake_scorer.on_predict = lambda _images: seen.append(connection.in_atomic_block)
    outcome = scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    assert seen == [False]
    assert outcome.scored == [image.pk]
    assert ListingImage.objects.get(pk=image.pk).status == ImageStatus.FLAGGED


def test_an_image_withdrawn_during_the_forward_pass_is_left_alone(fake_scorer):
    listing = listing_with(RED, BLUE)
    red, blue = listing.images.order_by("id")
    fake_scorer.on_predict = lambda _images: withdraw_listing(listing_id=listing.pk)
    outcome = scoring.score_batch(image_ids=[red.pk, blue.pk], scorer=fake_scorer, rng=never_audit)
    assert fake_scorer.calls == [2]
    assert outcome.scored == [] and outcome.requeued == []
    assert set(listing.images.values_list("status", flat=True)) == {ImageStatus.WITHDRAWN}
    assert not Score.objects.filter(image__listing=listing).exists()
    assert scored_events(red) == scored_events(blue) == 0
    listing.refresh_from_db()
    assert listing.status == ListingStatus.WITHDRAWN


def test_an_image_scored_by_another_worker_during_the_forward_pass_is_not_overwritten(fake_scorer):
    listing = listing_with(RED, BLUE)
    red, blue = listing.images.order_by("id")

    def another_worker_scores_red(_images):
        with transaction.atomic():
            other = ListingImage.objects.select_related("listing").get(pk=red.pk)
            routing.record_score(
                image=other,
                model_version="v0001",
                probabilities={"allowed": 0.99, "weapon": 0.01},
                prohibited=["weapon"],
                settings_row=get_settings(),
                rng=never_audit,
            )

    fake_scorer.on_predict = another_worker_scores_red
    outcome = scoring.score_batch(image_ids=[red.pk, blue.pk], scorer=fake_scorer, rng=never_audit)
    assert outcome.scored == [blue.pk]
    red.refresh_from_db()
    # Our forward pass said "weapon" with a high probability; the other worker's routing stands.
    assert (red.status, red.prohibited_probability) == (ImageStatus.CLEARED, 0.01)
    assert Score.objects.filter(image=red).count() == 1
    assert scored_events(red) == 1


def fail_writes_once(monkeypatch, error: Exception) -> list:
    """Make the next score write raise `error` (as a dropped connection or a lock timeout would)."""
    raised = []
    real = scoring.record_score

    def record_score(**kwargs):
        if not raised:
            raised.append(error)
            raise error
        return real(**kwargs)

    monkeypatch.setattr(scoring, "record_score", record_score)
    return raised


def test_a_database_error_while_writing_gives_the_attempt_back_and_retries_later(
    fake_scorer, frozen_clock, queued, monkeypatch, django_capture_on_commit_callbacks
):
    image = listing_with(RED).images.get()
    fail_writes_once(monkeypatch, OperationalError("server closed the connection unexpectedly"))
    outcome = scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    assert outcome.deferred == [image.pk] and outcome.scored == [] and outcome.failed == []
    image.refresh_from_db()
    assert (image.status, image.attempts, image.deferrals) == (ImageStatus.PENDING, 0, 1)
    assert image.next_attempt_at == frozen_clock.current + timedelta(seconds=30)
    assert "Database error" in image.last_error and image.scoring_lease_key == ""
    assert not Score.objects.filter(image=image).exists()

    # Until the wait is over, neither a task naming it nor the sweeper touches it.
    queued.clear()
    assert scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer).requeued == []
    assert fake_scorer.calls == [1]
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.sweep_pending() == 0
    frozen_clock.advance(seconds=31)
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.sweep_pending() == 1
    assert queued == [[image.pk]]
    assert scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit).scored == [image.pk]
    image.refresh_from_db()
    assert (image.status, image.attempts, image.deferrals, image.next_attempt_at) == (
        ImageStatus.FLAGGED,
        1,
        0,
        None,
    )


def test_infrastructure_errors_never_fail_an_image_and_back_off_up_to_the_cap(fake_scorer, frozen_clock, monkeypatch):
    image = listing_with(RED).images.get()
    waits = []
    for _ in range(get_settings().max_scoring_attempts + 2):
        fail_writes_once(monkeypatch, OperationalError("canceling statement due to lock timeout"))
        scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
        image.refresh_from_db()
        assert (image.status, image.attempts) == (ImageStatus.PENDING, 0)
        waits.append((image.next_attempt_at - frozen_clock.current).total_seconds())
        frozen_clock.advance(seconds=waits[-1])
    assert waits == [30, 60, 100, 100, 100]


def test_an_unreadable_stored_file_is_retried_with_backoff_and_its_neighbour_scored(fake_scorer, frozen_clock):
    listing = listing_with(RED, BLUE)
    red, blue = listing.images.order_by("id")
    path = red.file.path
    os.rename(path, f"{path}.away")  # the shared volume lost it for a while
    outcome = scoring.score_batch(image_ids=[red.pk, blue.pk], scorer=fake_scorer, rng=never_audit)
    assert (outcome.scored, outcome.deferred, outcome.failed) == ([blue.pk], [red.pk], [])
    red.refresh_from_db()
    assert (red.status, red.attempts, red.deferrals) == (ImageStatus.PENDING, 0, 1)
    assert "Stored file unreadable" in red.last_error
    assert red.next_attempt_at == frozen_clock.current + timedelta(seconds=30)

    frozen_clock.advance(seconds=31)
    scoring.score_batch(image_ids=[red.pk], scorer=fake_scorer, rng=never_audit)
    red.refresh_from_db()
    assert (red.status, red.deferrals) == (ImageStatus.PENDING, 2)
    assert red.next_attempt_at == frozen_clock.current + timedelta(seconds=60)

    os.rename(f"{path}.away", path)
    frozen_clock.advance(seconds=61)
    assert scoring.score_batch(image_ids=[red.pk], scorer=fake_scorer, rng=never_audit).scored == [red.pk]
    red.refresh_from_db()
    assert (red.status, red.last_error, red.deferrals) == (ImageStatus.FLAGGED, "", 0)


def test_a_failure_after_an_infrastructure_error_ends_the_backoff(fake_scorer, frozen_clock, monkeypatch):
    image = listing_with(RED).images.get()
    fail_writes_once(monkeypatch, OperationalError("deadlock detected"))
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer)
    frozen_clock.advance(seconds=31)
    fake_scorer.fail_on = {image.file.open("rb").read()}
    for _ in range(get_settings().max_scoring_attempts):
        scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer)
    image.refresh_from_db()
    assert (image.status, image.next_attempt_at) == (ImageStatus.FAILED, None)
    assert "cannot decode" in image.last_error


def test_images_leased_to_a_task_that_died_wait_for_it_or_for_the_lease_to_run_out(
    fake_scorer, frozen_clock, queued, django_capture_on_commit_callbacks
):
    image = listing_with(BLUE).images.get()
    # Task "a" claimed the image, then its process was killed before it wrote anything.
    claim = leases.claim_batch(image_ids=[image.pk], batch_size=8, max_attempts=3, active_version="v0001", key="a")
    assert claim.batch == [image.pk]

    # Another task (an intake message naming it, the sweeper) leaves it to "a".
    queued.clear()
    assert scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, key="b").requeued == []
    ListingImage.objects.filter(pk=image.pk).update(enqueued_at=None)  # long overdue, as far as the sweeper knows
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.sweep_pending() == 0
    assert fake_scorer.calls == [] and queued == []

    # "a" redelivered (the same task id) takes it back at once, and the lost attempt counts.
    assert scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit, key="a").scored == [image.pk]
    assert ListingImage.objects.get(pk=image.pk).attempts == 2


def test_a_redelivered_task_hands_back_at_once_the_images_of_its_first_claim_it_does_not_score_now(
    fake_scorer, frozen_clock, queued, django_capture_on_commit_callbacks
):
    first = listing_with(BLUE).images.get()
    others = list(listing_with(BLUE, RED, external_id="ext-2").images.order_by("id").values_list("pk", flat=True))
    # Task "a" named one image and claimed the other pending ones too; then its child was killed mid-batch.
    claim = leases.claim_batch(image_ids=[first.pk], batch_size=8, max_attempts=3, active_version="v0001", key="a")
    assert claim.batch == [first.pk, *others]

    # Redelivered, "a" scores its retried image alone and queues the others again at once, released.
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        outcome = scoring.score_batch(image_ids=[first.pk], scorer=fake_scorer, rng=never_audit, key="a")
    assert (outcome.scored, outcome.requeued) == ([first.pk], others)
    assert queued == [others]
    assert not ListingImage.objects.filter(pk__in=others).exclude(scoring_lease_key="").exists()

    # Another task (their own intake message) scores them long before the lease would have run out.
    frozen_clock.advance(seconds=1)
    outcome = scoring.score_batch(image_ids=others, scorer=fake_scorer, rng=never_audit, key="b")
    assert outcome.scored == [others[0]] and outcome.requeued == [others[1]]


def test_the_sweeper_queues_images_whose_lease_ran_out_at_once_and_only_once(
    frozen_clock, queued, settings, django_capture_on_commit_callbacks
):
    settings.VIGIA_PENDING_SWEEP_SECONDS = 3600
    image = listing_with(BLUE).images.get()
    leases.claim_batch(image_ids=[image.pk], batch_size=8, max_attempts=3, active_version="v0001", key="a")
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.sweep_pending() == 0
    # The task died and nothing redelivered it: once its lease runs out the image is due, an hour early.
    frozen_clock.advance(seconds=leases.lease_duration().total_seconds())
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.sweep_pending() == 1
        assert queueing.sweep_pending() == 0
    assert queued == [[image.pk]]
    assert ListingImage.objects.get(pk=image.pk).scoring_lease_key == ""


def test_a_lease_runs_out_after_the_tasks_time_limit(fake_scorer, frozen_clock, settings):
    image = listing_with(BLUE).images.get()
    leases.claim_batch(image_ids=[image.pk], batch_size=8, max_attempts=3, active_version="v0001", key="a")
    frozen_clock.advance(seconds=settings.VIGIA_SCORING_TIME_LIMIT)
    assert scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, key="b").scored == []
    frozen_clock.advance(seconds=leases.LEASE_MARGIN.total_seconds())
    assert scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit, key="b").scored == [image.pk]


def test_a_batch_out_of_time_is_handed_back_to_be_tried_image_by_image(
    fake_scorer, queued, django_capture_on_commit_callbacks
):
    listing = listing_with(BLUE, BLUE)
    ids = list(listing.images.order_by("id").values_list("pk", flat=True))

    def out_of_time(_images):
        raise SoftTimeLimitExceeded()

    fake_scorer.on_predict = out_of_time
    queued.clear()
    with pytest.raises(SoftTimeLimitExceeded), django_capture_on_commit_callbacks(execute=True):
        scoring.score_batch(image_ids=ids, scorer=fake_scorer)
    assert queued == [ids]
    rows = ListingImage.objects.filter(pk__in=ids)
    assert set(rows.values_list("attempts", "scoring_lease_key", "status")) == {(1, "", "pending")}

    fake_scorer.on_predict = None
    outcome = scoring.score_batch(image_ids=ids, scorer=fake_scorer, rng=never_audit)
    assert (outcome.scored, outcome.requeued) == ([ids[0]], [ids[1]])
    assert fake_scorer.calls == [2, 1]


def test_scoring_tasks_have_their_own_short_time_limit(settings):
    from moderation.celery import app
    from moderation.tasks.scoring import score_images

    assert (score_images.time_limit, score_images.soft_time_limit) == (
        settings.VIGIA_SCORING_TIME_LIMIT,
        settings.VIGIA_SCORING_SOFT_TIME_LIMIT,
    )
    assert score_images.soft_time_limit < score_images.time_limit < settings.CELERY_TASK_TIME_LIMIT
    longest = max(settings.CELERY_TASK_TIME_LIMIT, settings.VIGIA_SCORING_TIME_LIMIT)
    assert app.conf.broker_transport_options["visibility_timeout"] > longest


def test_a_flagged_image_out_of_rescore_attempts_keeps_its_score_and_its_place_in_the_queue(fake_scorer):
    image = listing_with(RED).images.get()
    scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    promoted = type(fake_scorer)(version="v0002")
    ListingImage.objects.filter(pk=image.pk).update(attempts=get_settings().max_scoring_attempts)
    outcome = scoring.score_batch(image_ids=[image.pk], scorer=promoted, rng=never_audit)
    assert (outcome.scored, outcome.failed, promoted.calls) == ([], [], [])
    image.refresh_from_db()
    assert (image.status, image.model_version) == (ImageStatus.FLAGGED, "v0001")
