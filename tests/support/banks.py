"""Photos through intake and the scoring service with the fake scorer, for the hash bank and grouping tests.

The fake scorer scores the share of red: with the threshold at 0.4, scikit-image's cat (0.43) and coffee (0.54)
are flagged, the rocket (0.27) and the astronaut (0.41 at 0.45) are cleared.
"""

import itertools

from moderation.models import ListingImage
from moderation.selectors.settings import get_settings
from moderation.services import review, scoring
from tests.support.factories import store_listing
from tests.support.images import photo, upload
from tests.support.scoring import FakeScorer, never_audit

SIZE = (96, 72)
_ids = itertools.count(1)


def set_threshold(value: float = 0.4) -> None:
    """One threshold for every label, and no audit sample, so routing is the threshold's alone."""
    row = get_settings()
    row.default_threshold, row.thresholds, row.audit_rate = value, {}, 0.0
    row.save()


def scored_photo(name: str = "chelsea", transform=None, scorer=None, size=SIZE) -> ListingImage:
    """A photo uploaded as a new listing and scored (hashed, matched, routed) by the scoring service."""
    listing = store_listing(external_id=f"photo-{next(_ids)}", files=[upload(photo(name, transform, size))])
    image = listing.images.get()
    scoring.score_batch(image_ids=[image.pk], scorer=scorer or FakeScorer(), rng=never_audit)
    image.refresh_from_db()
    return image


def decided(image: ListingImage, user, outcome: str):
    """A moderator's decision on a flagged photo, through the review service."""
    review.claim_item(user=user, image_id=image.pk)
    return review.decide(user=user, image_id=image.pk, outcome=outcome)
