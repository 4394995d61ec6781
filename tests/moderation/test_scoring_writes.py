"""What the scoring write costs the database: statements per photo, the batch's scores written at once."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from moderation.models import Listing, ListingImage, Score
from moderation.services import scoring
from moderation.services.events import next_sequence
from moderation.services.routing import write_scores
from tests.support.factories import listing_with
from tests.support.images import BLUE, RED
from tests.support.scoring import never_audit

pytestmark = pytest.mark.django_db

#: Statements each further photo of a batch adds, measured when the batch's scores went in at once: the
#: routing update (hashes included), the `image.scored` event with its sequence number, and the listing's refresh
#: with its `listing.status_changed` event (every photo here has a listing of its own, the dearest case).
STATEMENTS_PER_PHOTO = 10


def _photos(count: int, prefix: str) -> list[ListingImage]:
    return [listing_with(RED if i % 3 == 0 else BLUE, external_id=f"{prefix}{i}").images.get() for i in range(count)]


def _statements(fake_scorer, images: list[ListingImage]) -> int:
    with CaptureQueriesContext(connection) as captured:
        outcome = scoring.score_batch(
            image_ids=[image.pk for image in images], scorer=fake_scorer, batch_size=len(images), rng=never_audit
        )
    assert sorted(outcome.scored) == sorted(image.pk for image in images)
    return len(captured.captured_queries)


def test_each_photo_of_a_batch_adds_a_fixed_number_of_statements(fake_scorer, media_root, queued):
    small = _statements(fake_scorer, _photos(4, "small"))
    large = _statements(fake_scorer, _photos(12, "large"))
    per_photo = (large - small) / 8
    assert per_photo <= STATEMENTS_PER_PHOTO, f"{per_photo} statements per photo ({small} for 4, {large} for 12)"
    # The hashes went in with the routing update, not in one of their own.
    assert not ListingImage.objects.filter(pdq_hash="").exists()
    assert Score.objects.count() == 16


def test_write_scores_keeps_a_stored_score_and_returns_what_the_database_holds(media_root):
    kept, new = (listing_with(RED, external_id=name).images.get() for name in ("kept", "new"))
    stored = Score.objects.create(
        image=kept, model_version="v0001", probabilities={"allowed": 0.9, "weapon": 0.1}, prohibited_probability=0.1
    )
    scores = write_scores(
        results={
            kept.pk: ("v0001", {"allowed": 0.2, "weapon": 0.8}),
            new.pk: ("v0001", {"allowed": 0.3, "weapon": 0.7}),
        },
        prohibited=["weapon"],
    )
    assert scores[kept.pk].pk == stored.pk and scores[kept.pk].prohibited_probability == pytest.approx(0.1)
    assert scores[new.pk].pk is not None
    assert (scores[new.pk].prohibited_probability, scores[new.pk].prohibited_label) == (pytest.approx(0.7), "weapon")
    assert Score.objects.filter(image=kept).count() == 1
    assert write_scores(results={}, prohibited=["weapon"]) == {}


def test_write_scores_returns_each_image_its_own_versions_score(media_root):
    image = listing_with(RED).images.get()
    Score.objects.create(
        image=image, model_version="v0002", probabilities={"allowed": 0.9, "weapon": 0.1}, prohibited_probability=0.1
    )
    scores = write_scores(results={image.pk: ("v0001", {"allowed": 0.4, "weapon": 0.6})}, prohibited=["weapon"])
    assert scores[image.pk].model_version == "v0001"
    assert Score.objects.filter(image=image).count() == 2


def test_next_sequence_counts_each_listing_on_its_own(media_root):
    first, second = (listing_with(BLUE, external_id=name) for name in ("first", "second"))
    assert [next_sequence(first.pk), next_sequence(first.pk), next_sequence(second.pk)] == [1, 2, 1]
    assert Listing.objects.get(pk=first.pk).event_sequence == 2
    with pytest.raises(Listing.DoesNotExist):
        next_sequence(second.pk + 1000)
