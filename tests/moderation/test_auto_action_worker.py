"""A real scoring worker (real Redis, PostgreSQL, a trained tiny model) takes a photo down at its auto-action
threshold: an automated decision drawn into QA, the listing taken down, the marketplace told; the allowed photo
beside it is cleared."""

import pytest

from moderation.models import (
    Decision,
    Event,
    EventType,
    ImageStatus,
    ListingImage,
    ListingStatus,
    ModelVersion,
    ModerationSettings,
)
from moderation.selectors.calibration import qa_queue
from moderation.services.model_versions import sync_models
from tests.support import images
from tests.support.factories import store_listing
from tests.support.images import ALLOWED_COLOR, PROHIBITED, PROHIBITED_COLOR
from tests.support.waiting import wait_until
from tests.support.workers import clean_broker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def test_a_worker_takes_a_photo_down_at_the_auto_action_threshold_and_samples_it_to_qa(celery_worker_process, settings):
    worker = celery_worker_process
    clean_broker(worker.broker)
    worker.extra["faults"].write_text("{}")
    settings.MEDIA_ROOT = worker.media
    settings.VIGIA_MODEL_REGISTRY = worker.models
    sync_models()
    assert ModelVersion.objects.get(is_active=True).version == worker.extra["version"]
    ModerationSettings.objects.update_or_create(
        pk=1,
        defaults={
            "audit_rate": 0.0,
            "thresholds": {PROHIBITED: 0.3},
            "auto_thresholds": {PROHIBITED: 0.5},
            "qa_rate": 1.0,
        },
    )
    listing = store_listing(
        external_id="auto-1",
        title="a listing",
        description="",
        files=[images.upload(images.noisy_png(color, seed=seed), name="p.png")
               for color, seed in ((PROHIBITED_COLOR, 91_001), (ALLOWED_COLOR, 91_002))],
    )  # fmt: skip
    red, blue = listing.images.order_by("id")
    wait_until(
        lambda: not ListingImage.objects.filter(listing=listing, status=ImageStatus.PENDING).exists(),
        timeout=90,
        what="both photos to be scored",
        worker=worker,
    )
    red.refresh_from_db()
    blue.refresh_from_db()
    listing.refresh_from_db()
    assert red.status == ImageStatus.CONFIRMED, red.prohibited_probability
    assert blue.status == ImageStatus.CLEARED
    assert listing.status == ListingStatus.TAKEN_DOWN
    decision = Decision.objects.get(image=red)
    assert decision.automated and decision.moderator is None and decision.bank_entry is None
    assert decision.model_version == worker.extra["version"] and decision.auto_threshold == 0.5
    assert decision.prohibited_probability >= 0.5 and decision.qa_sampled
    assert list(qa_queue()) == [decision]
    assert Event.objects.filter(type=EventType.IMAGE_DECIDED, listing=listing).count() == 1
