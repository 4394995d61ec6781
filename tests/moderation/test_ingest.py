import pytest
from django.db import transaction

from moderation.models import ImageStatus, Listing, ListingImage, ListingStatus, Score
from moderation.selectors.settings import get_settings
from moderation.services.ingest import DuplicateListing
from moderation.validation import ImageValidationError
from tests.support import images
from tests.support.factories import store_listing

pytestmark = pytest.mark.django_db


def stored_files(media_root):
    return sorted(path for path in media_root.rglob("*") if path.is_file()) if media_root.exists() else []


def test_listing_and_images_are_stored_and_queued_on_commit(media_root, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        listing = store_listing(
            external_id="ext-1",
            title="Old lamp",
            description="Works",
            files=[images.upload(images.jpeg_bytes()), images.upload(images.png_bytes(), name="../../etc/x.png")],
        )
    assert listing.status == ListingStatus.PENDING
    stored = list(listing.images.order_by("id"))
    assert [image.status for image in stored] == [ImageStatus.PENDING, ImageStatus.PENDING]
    assert [image.image_format for image in stored] == ["JPEG", "PNG"]
    assert stored[1].file.name.endswith(".png") and "etc" not in stored[1].file.name
    assert all(image.enqueued_at for image in stored)
    assert len(stored_files(media_root)) == 2
    assert queued == [[image.pk for image in stored]]


def test_one_bad_image_stores_nothing(media_root, queued, django_capture_on_commit_callbacks):
    files = [images.upload(images.jpeg_bytes()), images.upload(images.truncated_jpeg())]
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ImageValidationError) as info:
        store_listing(external_id="ext-2", title="", description="", files=files)
    assert info.value.code == "corrupt"
    assert "images[1]" in info.value.detail
    assert not Listing.objects.exists()
    assert stored_files(media_root) == []
    assert queued == []


def test_the_same_external_id_with_the_same_photos_is_a_retry_and_with_others_a_conflict(media_root, queued):
    from moderation.models import Client
    from moderation.services.ingest import create_listing

    desk = Client.objects.desk()
    photo = images.jpeg_bytes()
    first = create_listing(client=desk, external_id="ext-3", title="", description="", files=[images.upload(photo)])
    assert first.created
    retry = create_listing(client=desk, external_id="ext-3", title="", description="", files=[images.upload(photo)])
    assert not retry.created and retry.listing.pk == first.listing.pk
    with pytest.raises(DuplicateListing) as conflict:
        store_listing(external_id="ext-3", files=[images.upload(images.jpeg_bytes(color=(9, 9, 9)))])
    assert conflict.value.listing.pk == first.listing.pk
    assert ListingImage.objects.count() == 1
    assert len(stored_files(media_root)) == 1


def test_external_ids_are_unique_per_client_not_across_clients(media_root, queued):
    from moderation.models import Client

    other = Client.objects.create(name="other-site")
    mine = store_listing(external_id="ad-1", files=[images.upload(images.jpeg_bytes())])
    theirs = store_listing(external_id="ad-1", files=[images.upload(images.jpeg_bytes())], client=other)
    assert mine.pk != theirs.pk and (mine.client, theirs.client) == (Client.objects.desk(), other)


def test_an_idempotency_key_answers_a_repeat_and_refuses_another_request(media_root, queued):
    from moderation.services.ingest import IdempotencyKeyReused

    first = store_listing(external_id="ext-k", files=[images.upload(images.jpeg_bytes())], idempotency_key="k-1")
    again = store_listing(external_id="ext-k", files=[images.upload(images.jpeg_bytes())], idempotency_key="k-1")
    assert again.pk == first.pk
    with pytest.raises(IdempotencyKeyReused):
        store_listing(external_id="ext-other", files=[images.upload(images.jpeg_bytes())], idempotency_key="k-1")
    assert Listing.objects.count() == 1 and ListingImage.objects.count() == 1


def test_rolled_back_upload_queues_nothing(media_root, queued, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        store_listing(external_id="ext-4", title="", description="", files=[images.upload(images.jpeg_bytes())])
        raise RuntimeError("the caller's transaction fails after the upload")
    assert callbacks == []
    assert queued == []
    assert not Listing.objects.filter(external_id="ext-4").exists()


def test_identical_bytes_reuse_the_active_models_score(media_root, queued, active_model):
    row = get_settings()
    row.audit_rate = 0
    row.save()
    data = images.jpeg_bytes(color=(250, 5, 5))
    first = store_listing(external_id="ext-5", title="", description="", files=[images.upload(data)]).images.get()
    Score.objects.create(
        image=first,
        model_version="v0001",
        probabilities={"allowed": 0.1, "weapon": 0.9},
        prohibited_probability=0.9,
        prohibited_label="weapon",
    )
    queued.clear()
    listing = store_listing(external_id="ext-6", title="", description="", files=[images.upload(data)])
    again = listing.images.get()
    assert again.status == ImageStatus.FLAGGED
    assert (again.prohibited_probability, again.prohibited_label, again.model_version) == (0.9, "weapon", "v0001")
    assert again.scores.get().probabilities == {"allowed": 0.1, "weapon": 0.9}
    assert listing.status == ListingStatus.IN_REVIEW
    assert queued == []


def test_a_score_from_another_model_is_not_reused(media_root, queued, active_model, django_capture_on_commit_callbacks):
    data = images.jpeg_bytes()
    first = store_listing(external_id="ext-7", title="", description="", files=[images.upload(data)]).images.get()
    Score.objects.create(image=first, model_version="v0000", probabilities={"weapon": 0.9}, prohibited_probability=0.9)
    with django_capture_on_commit_callbacks(execute=True):
        again = store_listing(external_id="ext-8", title="", description="", files=[images.upload(data)]).images.get()
    assert again.status == ImageStatus.PENDING
    assert queued[-1] == [again.pk]
