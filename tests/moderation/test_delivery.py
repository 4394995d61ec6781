"""Delivery with a real Celery worker, real Redis and PostgreSQL: crashes, poison, rollbacks, lost messages and an
unreadable stored file.

Eager mode would prove nothing here: what matters is what happens between the broker, a worker child and the
database when a process dies or a message disappears.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from moderation import outbox
from moderation.models import ImageStatus, Listing, ListingImage, ListingStatus, ModerationSettings, Score
from moderation.validation import validate_image
from tests.support import images
from tests.support.factories import store_listing
from tests.support.images import ALLOWED_COLOR, PROHIBITED_COLOR
from tests.support.waiting import wait_until
from tests.support.workers import clean_broker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
_seed = iter(range(50_000, 10**9))


@pytest.fixture
def delivery(celery_worker_process, settings):
    """The shared worker, with empty queues, no faults and this test's media folder."""
    clean_broker(celery_worker_process.broker)
    celery_worker_process.extra["faults"].write_text("{}")
    settings.MEDIA_ROOT = celery_worker_process.media
    ModerationSettings.objects.update_or_create(pk=1, defaults={"audit_rate": 0.0, "max_scoring_attempts": 3})
    yield celery_worker_process
    celery_worker_process.extra["faults"].write_text("{}")


def set_faults(delivery, **faults) -> None:
    delivery.extra["faults"].write_text(json.dumps(faults))


def photo(color) -> bytes:
    return images.noisy_png(color, seed=next(_seed))


def upload_listing(external_id: str, photos: list[bytes]) -> Listing:
    return store_listing(
        external_id=external_id,
        title="a listing",
        description="",
        files=[images.upload(data, name="p.png") for data in photos],
    )


def not_pending(ids) -> bool:
    return not ListingImage.objects.filter(pk__in=ids, status=ImageStatus.PENDING).exists()


def test_child_killed_mid_batch_loses_no_image_and_scores_each_once(delivery):
    marker = delivery.work / "held"
    marker.unlink(missing_ok=True)
    log = delivery.work / "batches-kill.log"
    set_faults(delivery, hold_once=str(marker), log=str(log))
    colors = [PROHIBITED_COLOR, ALLOWED_COLOR] * 3
    listing = upload_listing("kill-1", [photo(color) for color in colors])
    ids = list(listing.images.order_by("id").values_list("pk", flat=True))

    wait_until(marker.exists, timeout=60, what="the batch to reach the model", worker=delivery)
    os.kill(int(marker.read_text()), signal.SIGKILL)

    wait_until(lambda: not_pending(ids), timeout=60, what="every image to be scored after the crash", worker=delivery)
    version = delivery.extra["version"]
    for image_id, color in zip(ids, colors, strict=True):
        assert list(Score.objects.filter(image_id=image_id).values_list("model_version", flat=True)) == [version]
        image = ListingImage.objects.get(pk=image_id)
        assert image.model_version == version
        expected = ImageStatus.FLAGGED if color == PROHIBITED_COLOR else ImageStatus.CLEARED
        assert image.status == expected, (image.prohibited_probability, image.status)
    batches = [int(line.split()[1]) for line in log.read_text().splitlines()]
    # The killed pass held all six images at once; each then counted that lost attempt.
    assert batches[0] == 6
    attempts = list(ListingImage.objects.filter(pk__in=ids).values_list("attempts", flat=True))
    assert all(count >= 2 for count in attempts)
    listing.refresh_from_db()
    assert listing.status == ListingStatus.IN_REVIEW


def test_child_killed_holding_images_of_another_message_gets_them_scored_long_before_its_lease_runs_out(delivery):
    marker = delivery.work / "held-others"
    marker.unlink(missing_ok=True)
    log = delivery.work / "batches-others.log"
    set_faults(delivery, hold_once=str(marker), log=str(log))
    colors = [PROHIBITED_COLOR, ALLOWED_COLOR, ALLOWED_COLOR]
    # Two listings, two messages; the first task's claim takes the second listing's images too.
    with transaction.atomic():
        first = upload_listing("others-1", [photo(color) for color in colors])
        second = upload_listing("others-2", [photo(color) for color in colors])
    ids = list(ListingImage.objects.filter(listing__in=[first, second]).order_by("id").values_list("pk", flat=True))

    wait_until(marker.exists, timeout=60, what="the batch to reach the model", worker=delivery)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    killed_at = time.monotonic()

    # A lease lasts past the task's time limit (minutes): nothing may wait for it.
    wait_until(lambda: not_pending(ids), timeout=45, what="every image scored after the crash", worker=delivery)
    assert time.monotonic() - killed_at < 45
    assert int(log.read_text().splitlines()[0].split()[1]) == 6
    version = delivery.extra["version"]
    for image_id in ids:
        assert list(Score.objects.filter(image_id=image_id).values_list("model_version", flat=True)) == [version]
    assert not ListingImage.objects.filter(pk__in=ids).exclude(scoring_lease_key="").exists()


def test_poison_image_ends_failed_after_max_attempts(delivery):
    ModerationSettings.objects.filter(pk=1).update(max_scoring_attempts=2)
    poison, good = photo(ALLOWED_COLOR), photo(ALLOWED_COLOR)
    stored = validate_image(images.upload(poison, name="p.png")).content
    set_faults(delivery, poison=[hashlib.sha256(stored).hexdigest()])
    listing = upload_listing("poison-1", [poison, good])
    bad_id, good_id = listing.images.order_by("id").values_list("pk", flat=True)

    wait_until(
        lambda: not_pending([bad_id, good_id]), timeout=90, what="the poison image to be given up", worker=delivery
    )
    bad, fine = ListingImage.objects.get(pk=bad_id), ListingImage.objects.get(pk=good_id)
    assert bad.status == ImageStatus.FAILED
    assert bad.attempts == 2 and bad.failed_at and "2 attempts" in bad.last_error
    assert not Score.objects.filter(image=bad).exists()
    # Its neighbour in the first batch was retried on its own and is not harmed.
    assert fine.status == ImageStatus.CLEARED and Score.objects.filter(image=fine).count() == 1
    listing.refresh_from_db()
    assert listing.status == ListingStatus.NEEDS_ATTENTION


def test_rolled_back_upload_queues_nothing(delivery, monkeypatch):
    published = []
    real_publish = outbox.publish

    def recording_publish(task_name, args):
        published.append(list(args[0]))
        return real_publish(task_name, args)

    monkeypatch.setattr(outbox, "publish", recording_publish)
    with pytest.raises(RuntimeError), transaction.atomic():
        upload_listing("rollback-1", [photo(PROHIBITED_COLOR)])
        raise RuntimeError("something after the upload failed")
    assert published == []
    assert delivery.broker.llen("scoring") == 0
    assert not Listing.objects.filter(external_id="rollback-1").exists()

    # The same upload committed does reach the worker.
    image = upload_listing("rollback-2", [photo(PROHIBITED_COLOR)]).images.get()
    assert published == [[image.pk]]
    wait_until(lambda: not_pending([image.pk]), timeout=60, what="the committed upload to be scored", worker=delivery)
    assert ListingImage.objects.get(pk=image.pk).status == ImageStatus.FLAGGED


def test_sweeper_repairs_messages_lost_by_redis(delivery):
    from moderation.celery import app

    broker = delivery.broker
    worker = [delivery.node]
    app.control.cancel_consumer("scoring", destination=worker, reply=True, timeout=5)
    try:
        image = upload_listing("lost-1", [photo(PROHIBITED_COLOR)]).images.get()
        wait_until(lambda: broker.llen("scoring") == 1, timeout=10, what="the message to be queued", worker=delivery)
        broker.delete("scoring")  # what a Redis restart without persistence does to queued tasks
    finally:
        app.control.add_consumer("scoring", destination=worker, reply=True, timeout=5)
    time.sleep(1.5)
    assert ListingImage.objects.get(pk=image.pk).status == ImageStatus.PENDING

    outbox.publish(outbox.SWEEP_PENDING, [])
    wait_until(lambda: not_pending([image.pk]), timeout=60, what="the sweeper to get the image scored", worker=delivery)
    image.refresh_from_db()
    assert image.status == ImageStatus.FLAGGED
    assert Score.objects.filter(image=image).count() == 1


def test_an_unreadable_file_costs_no_attempt_and_is_scored_once_readable_again(delivery):
    from moderation.celery import app

    worker = [delivery.node]
    app.control.cancel_consumer("scoring", destination=worker, reply=True, timeout=5)
    try:
        image = upload_listing("nfs-1", [photo(PROHIBITED_COLOR)]).images.get()
        stored = Path(image.file.path)
        stored.rename(stored.with_suffix(".away"))  # the shared volume lost it before the worker read it
    finally:
        app.control.add_consumer("scoring", destination=worker, reply=True, timeout=5)

    def handed_back():
        return ListingImage.objects.filter(pk=image.pk, deferrals=1).exists()

    wait_until(handed_back, timeout=60, what="the worker to hand the image back", worker=delivery)
    image.refresh_from_db()
    assert (image.status, image.attempts) == (ImageStatus.PENDING, 0)
    assert "Stored file unreadable" in image.last_error and image.next_attempt_at is not None

    stored.with_suffix(".away").rename(stored)
    # The wait is over (rather than 30 s from now): the sweeper queues it again.
    ListingImage.objects.filter(pk=image.pk).update(next_attempt_at=timezone.now())
    outbox.publish(outbox.SWEEP_PENDING, [])
    wait_until(lambda: not_pending([image.pk]), timeout=60, what="the retried image to be scored", worker=delivery)
    image.refresh_from_db()
    assert (image.status, image.attempts, image.deferrals, image.last_error) == (ImageStatus.FLAGGED, 1, 0, "")
    assert Score.objects.filter(image=image).count() == 1


def test_health_counts_the_running_worker_from_its_own_report(delivery, settings):
    from moderation.selectors.health import check_workers

    settings.CELERY_BROKER_URL = delivery.broker_url  # where the worker's scoring child reports
    # The queues were just emptied, its report with them; the child writes it again within a heartbeat.
    wait_until(
        lambda: check_workers(timeout=2.0)["ok"], timeout=30, what="the worker's serving report", worker=delivery
    )
    assert delivery.node in check_workers(timeout=2.0)["names"]


SERVE_ONE_SCORE = """
import json, sys
import django
django.setup()
from django.contrib.auth.models import User
from rest_framework.test import APIRequestFactory, force_authenticate
from moderation.api.scoring import ScoreView
from tests.support import images

ScoreView.throttle_classes = []  # the rate store is not what this process is about
request = APIRequestFactory().post(
    "/api/v1/score", {"image": images.upload(images.png_bytes(color=images.PROHIBITED_COLOR))}, format="multipart"
)
force_authenticate(request, user=User(pk=1, username="marketplace"))
response = ScoreView.as_view()(request)
response.render()
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "ai_edge_litert"))
print(json.dumps({"status": response.status_code, "body": json.loads(response.content), "loaded": loaded}))
"""


def test_score_is_answered_by_a_scoring_worker_and_the_web_process_loads_no_model(delivery, monkeypatch):
    from rest_framework.test import APIClient

    from moderation import worker
    from tests.support.factories import make_api_key
    from tests.support.workers import database_url

    # Were the model run here, in the web process, this would fail the test.
    monkeypatch.setattr(worker, "get_scorer", lambda: pytest.fail("the web process ran the model"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(get_user_model().objects.create_user('acme-api'))}")
    response = client.post("/api/v1/score", {"image": images.upload(photo(PROHIBITED_COLOR))}, format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"] == delivery.extra["version"]
    assert max(body["probabilities"], key=body["probabilities"].get) == images.PROHIBITED

    # A fresh process serving the same call never imports TensorFlow, Keras or the LiteRT interpreter.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "moderation.test_settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": delivery.broker_url,
    }
    served = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_SCORE], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert served.returncode == 0, served.stderr[-2000:]
    answer = json.loads(served.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200 and answer["body"]["model_version"] == delivery.extra["version"]
    assert answer["loaded"] == []


def test_a_confirmation_takes_down_a_mirrored_copy_scored_by_the_worker_within_seconds(delivery):
    """The worker process has its own bank index: a decision made here reaches it through the banks' version."""
    from moderation.models import Decision, DecisionOutcome
    from moderation.services import review
    from tests.support.factories import make_moderator

    ModerationSettings.objects.filter(pk=1).update(default_threshold=0.0, thresholds={})
    original = store_listing(external_id="bank-a", files=[images.upload(images.photo(size=(96, 72)))]).images.get()
    flagged = ListingImage.objects.filter(pk=original.pk, status=ImageStatus.FLAGGED).exclude(pdq_hash="")
    wait_until(flagged.exists, timeout=60, what="the original scored and hashed", worker=delivery)
    moderator = make_moderator("bank-mod")
    review.claim_item(user=moderator, image_id=original.pk)
    review.decide(user=moderator, image_id=original.pk, outcome=DecisionOutcome.CONFIRM)
    decided_at = time.monotonic()
    mirrored = images.photo(transform=images.mirrored, size=(96, 72))
    copy = store_listing(external_id="bank-b", files=[images.upload(mirrored)]).images.get()
    taken_down = ListingImage.objects.filter(pk=copy.pk, status=ImageStatus.CONFIRMED)
    wait_until(taken_down.exists, timeout=30, what="the copy taken down", worker=delivery)
    assert time.monotonic() - decided_at < 10
    decision = Decision.objects.get(image=copy)
    assert decision.automated and decision.bank_entry.source_decision.image_id == original.pk
    assert Listing.objects.get(pk=copy.listing_id).status == ListingStatus.TAKEN_DOWN
