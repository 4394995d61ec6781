"""Scoring under row-lock contention on PostgreSQL: a thread on its own connection plays the other worker."""

import threading

import pytest
from django.db import connection, transaction

from moderation.models import ImageStatus, ListingImage
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
    # By the forward pass the scoring transaction has taken its rows; the scan lets go of the held one then.
    fake_scorer.on_predict = lambda _images: release.set()

    published_before = len(queued)  # intake queued both images already
    outcome = scoring.score_batch(image_ids=[held.pk, free.pk], scorer=fake_scorer, rng=never_audit)
    scan.join(10)

    assert (outcome.scored, outcome.requeued) == ([free.pk], [held.pk])
    held.refresh_from_db()
    assert (held.status, held.attempts) == (ImageStatus.PENDING, 0)
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
