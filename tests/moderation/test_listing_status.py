"""A listing's status derived from its images (services/listings.py): which image status wins."""

import pytest

from moderation.models import ImageStatus, ListingStatus
from moderation.services.listings import derive_listing_status


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([ImageStatus.PENDING], ListingStatus.PENDING),
        ([ImageStatus.FLAGGED, ImageStatus.CLEARED], ListingStatus.IN_REVIEW),
        ([ImageStatus.CLEARED, ImageStatus.REJECTED], ListingStatus.LIVE),
        ([ImageStatus.FAILED], ListingStatus.NEEDS_ATTENTION),
        # Nothing moves a failed image on by itself, so it outranks images that are merely waiting.
        ([ImageStatus.FAILED, ImageStatus.PENDING], ListingStatus.NEEDS_ATTENTION),
        ([ImageStatus.FAILED, ImageStatus.FLAGGED, ImageStatus.CLEARED], ListingStatus.NEEDS_ATTENTION),
        # A confirmed image takes the listing down whatever else failed.
        ([ImageStatus.FAILED, ImageStatus.CONFIRMED], ListingStatus.TAKEN_DOWN),
    ],
)
def test_status_of_a_listing_from_its_images(images, expected):
    assert derive_listing_status(images) == expected


def test_a_withdrawn_listing_stays_withdrawn_with_a_failed_image():
    assert derive_listing_status([ImageStatus.FAILED], withdrawn=True) == ListingStatus.WITHDRAWN
