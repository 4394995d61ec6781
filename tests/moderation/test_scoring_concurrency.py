"""Scoring under row-lock contention on PostgreSQL: a thread on its own connection plays the other worker (or a
moderator, or a withdrawal) while the model runs, holding no lock of the scoring task's."""

import threading

import pytest
from django.db import DatabaseError, connection, transaction

from moderation.models import ImageStatus, Listing, ListingImage
from moderation.services import scoring
from tests.support.factories import listing_with
from tests.support.images import BLUE
from tests.support.scoring import never_audit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("row-lock races need PostgreSQL: set DATABASE_URL=postgres://...")


def start_right_after_the_claim(monkeypatch, other: threading.Thread, locked: threading.Event) -> None:
    """Start `other` between the task's claim and its scoring transaction, once it holds its row lock."""
    real_claim = scoring.claim_batch

    def claim_then_collide(*args, **kwargs):
        claim = real_claim(*args, **kwargs)
        other.start()
        assert locked.wait(10)
        return claim

    monkeypatch.setattr(scoring, "claim_batch", claim_then_collide)


def test_a_claimed_image_another_worker_holds_is_queued_again_with_its_attempt_back(
    fake_scorer, media_root, queued, monkeypatch
):
    held, free = listing_with(BLUE, BLUE).images.order_by("id")
    locked, release = threading.Event(), threading.Event()

    def other_worker_scan():
        # Another worker's claim scan holding the row for a moment, without ever scoring it.
        try:
            with transaction.atomic():
                ListingImage.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    scan = threading.Thread(target=other_worker_scan)
    start_right_after_the_claim(monkeypatch, scan, locked)
    # The write skipped the held row (it never waits on one); the scan lets go of it before it is queued again.
    real_requeue = scoring.requeue_skipped

    def requeue_once_released(**kwargs):
        release.set()
        return real_requeue(**kwargs)

    monkeypatch.setattr(scoring, "requeue_skipped", requeue_once_released)

    published_before = len(queued)  # intake queued both images already
    outcome = scoring.score_batch(image_ids=[held.pk, free.pk], scorer=fake_scorer, rng=never_audit)
    scan.join(10)

    assert (outcome.scored, outcome.requeued) == ([free.pk], [held.pk])
    assert fake_scorer.calls == [2]
    held.refresh_from_db()
    assert (held.status, held.attempts, held.scoring_lease_key) == (ImageStatus.PENDING, 0, "")
    assert not held.scores.exists()
    assert queued[published_before:] == [[held.pk]]


def test_an_image_the_other_worker_scored_meanwhile_is_not_queued_again(fake_scorer, media_root, queued, monkeypatch):
    held, free = listing_with(BLUE, BLUE).images.order_by("id")
    locked = threading.Event()

    def other_worker_scores_it():
        try:
            with transaction.atomic():
                image = ListingImage.objects.select_for_update().get(pk=held.pk)
                locked.set()
                image.status = ImageStatus.CLEARED
                image.save(update_fields=["status"])
        finally:
            connection.close()

    worker = threading.Thread(target=other_worker_scores_it)
    start_right_after_the_claim(monkeypatch, worker, locked)
    published_before = len(queued)  # intake queued both images already
    outcome = scoring.score_batch(image_ids=[held.pk, free.pk], scorer=fake_scorer, rng=never_audit)
    worker.join(10)

    # The row lock is waited for; once the other worker has committed, the image is no longer due.
    assert outcome.scored == [free.pk] and outcome.requeued == []
    assert queued[published_before:] == []


def test_another_connection_can_lock_the_rows_while_the_model_runs(fake_scorer, media_root, queued):
    listing = listing_with(BLUE, BLUE)
    ids = list(listing.images.order_by("id").values_list("pk", flat=True))
    locked = []

    def lock_everything_without_waiting():
        try:
            with transaction.atomic():
                rows = list(ListingImage.objects.select_for_update(nowait=True).filter(pk__in=ids))
                Listing.objects.select_for_update(nowait=True).get(pk=listing.pk)
                locked.append(len(rows))
        except DatabaseError as error:
            locked.append(error)
        finally:
            connection.close()

    def while_the_model_runs(_images):
        other = threading.Thread(target=lock_everything_without_waiting)
        other.start()
        other.join(10)

    fake_scorer.on_predict = while_the_model_runs
    outcome = scoring.score_batch(image_ids=ids, scorer=fake_scorer, rng=never_audit)
    assert locked == [2]
    assert outcome.scored == ids


def test_a_lock_timeout_while_writing_gives_the_attempt_back(
    fake_scorer, media_root, queued, monkeypatch, frozen_clock
):
    monkeypatch.setattr(scoring, "WRITE_LOCK_TIMEOUT_MS", 200)
    listing = listing_with(BLUE)
    image = listing.images.get()
    holding, done = threading.Event(), threading.Event()

    def moderator_holds_the_listing():
        # A long transaction on the listing row (its events are numbered there): the write cannot wait it out.
        try:
            with transaction.atomic():
                Listing.objects.select_for_update().get(pk=listing.pk)
                holding.set()
                done.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=moderator_holds_the_listing)

    def while_the_model_runs(_images):
        holder.start()
        assert holding.wait(10)

    fake_scorer.on_predict = while_the_model_runs
    try:
        outcome = scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit)
    finally:
        done.set()
        holder.join(10)
    assert (outcome.scored, outcome.deferred, outcome.failed) == ([], [image.pk], [])
    image.refresh_from_db()
    assert (image.status, image.attempts, image.deferrals) == (ImageStatus.PENDING, 0, 1)
    assert "lock timeout" in image.last_error and image.next_attempt_at > frozen_clock.current
    assert not image.scores.exists()

    fake_scorer.on_predict = None
    frozen_clock.advance(seconds=(image.next_attempt_at - frozen_clock.current).total_seconds())
    assert scoring.score_batch(image_ids=[image.pk], scorer=fake_scorer, rng=never_audit).scored == [image.pk]
