import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from moderation import worker
from moderation.models import Decision, DecisionOutcome, ImageStatus, Listing, ListingImage, Score
from tests.support import images
from tests.support.factories import make_api_key

pytestmark = pytest.mark.django_db

LISTINGS = "/api/v1/listings"


@pytest.fixture
def user():
    return get_user_model().objects.create_user("marketplace", password="pw-for-tests-only")


@pytest.fixture
def client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(user)}")
    return client


def post_listing(client, external_id="ext-1", files=None, **extra):
    files = files if files is not None else [images.upload(images.jpeg_bytes())]
    data = {"external_id": external_id, "title": "Lamp", "description": "Old", "images": files, **extra}
    return client.post(LISTINGS, data, format="multipart")


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]


def test_post_listing_stores_it_and_queues_scoring(client, media_root, queued, django_capture_on_commit_callbacks):
    files = [images.upload(images.jpeg_bytes()), images.upload(images.webp_bytes(), name="b.webp")]
    with django_capture_on_commit_callbacks(execute=True):
        response = post_listing(client, files=files)
    assert response.status_code == 201, response.content
    body = response.json()
    listing = Listing.objects.get()
    assert body["id"] == listing.pk and body["external_id"] == "ext-1" and body["status"] == "pending"
    assert [image["status"] for image in body["images"]] == ["pending", "pending"]
    assert listing.submitted_by.username == "marketplace"
    assert queued == [[image["id"] for image in body["images"]]]


def test_anonymous_and_bad_tokens_get_401_json(media_root, queued):
    anonymous = APIClient()
    response = post_listing(anonymous)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Token realm="api"'
    anonymous.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_error(post_listing(anonymous), 401, "authentication_failed")
    assert_error(anonymous.get(f"{LISTINGS}/1"), 401, "authentication_failed")
    assert not Listing.objects.exists()


def test_session_post_without_csrf_token_is_refused(user, media_root, queued):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    assert_error(post_listing(browser), 403, "permission_denied")


def test_missing_images_is_400(client, media_root):
    assert_error(client.post(LISTINGS, {"external_id": "x"}, format="multipart"), 400, "invalid")


def test_json_body_is_refused(client):
    response = client.post(LISTINGS, {"external_id": "x"}, format="json")
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (images.truncated_jpeg(), 400, "corrupt"),
        (images.junk_bytes(), 400, "not_an_image"),
        (images.gif_bytes(), 400, "unsupported_type"),
        (images.svg_bytes(), 400, "unsupported_type"),
        (b"", 400, "empty"),
        (images.bomb_png(), 413, "too_many_pixels"),
    ],
)
def test_one_bad_image_refuses_the_whole_listing(client, media_root, queued, data, status, code):
    files = [images.upload(images.jpeg_bytes()), images.upload(data, name="bad.jpg")]
    response = post_listing(client, files=files)
    assert_error(response, status, code)
    assert "images[1]" in response.json()["detail"]
    assert not Listing.objects.exists() and not ListingImage.objects.exists()
    assert not media_root.exists() or not any(path.is_file() for path in media_root.rglob("*"))


def test_oversized_image_is_413(client, media_root, settings):
    settings.VIGIA_MAX_UPLOAD_BYTES = 1000
    response = post_listing(client, files=[images.upload(images.jpeg_bytes(size=(300, 300)))])
    assert_error(response, 413, "too_large")
    assert not Listing.objects.exists()


def test_too_many_files_is_refused_as_json(client, media_root, settings):
    files = [images.upload(images.jpeg_bytes()) for _ in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)]
    assert_error(post_listing(client, files=files), 400, "too_many_files")
    assert not Listing.objects.exists()


def test_request_body_over_djangos_limit_is_413_json(client, media_root, settings):
    huge = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)
    assert_error(post_listing(client, description=huge), 413, "too_large")


def test_the_same_external_id_with_other_photos_is_409_naming_the_existing_listing(client, media_root, queued):
    first = post_listing(client)
    assert first.status_code == 201
    other = post_listing(client, files=[images.upload(images.jpeg_bytes(color=(1, 2, 3)))])
    assert_error(other, 409, "duplicate_external_id")
    assert other.json()["listing_id"] == first.json()["id"]
    assert ListingImage.objects.count() == 1


def test_listing_detail_shows_scores_and_decisions(client, user, media_root, queued):
    listing_id = post_listing(client).json()["id"]
    image = ListingImage.objects.get()
    Score.objects.create(image=image, model_version="v0001", probabilities={"weapon": 0.9}, prohibited_probability=0.9)
    ListingImage.objects.filter(pk=image.pk).update(status=ImageStatus.CONFIRMED, model_version="v0001")
    Decision.objects.create(image=image, moderator=user, outcome=DecisionOutcome.CONFIRM, policy_category="weapons")
    response = client.get(f"{LISTINGS}/{listing_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["external_id"] == "ext-1" and body["title"] == "Lamp"
    (item,) = body["images"]
    assert item["status"] == "confirmed"
    assert item["scores"][0]["model_version"] == "v0001"
    assert item["scores"][0]["probabilities"] == {"weapon": 0.9}
    assert item["decisions"][0]["outcome"] == "confirm"
    assert "moderator" not in item["decisions"][0]


def test_unknown_listing_and_unknown_paths_are_json_404(client):
    assert_error(client.get(f"{LISTINGS}/999999"), 404, "not_found")
    assert_error(client.get(f"{LISTINGS}/abc"), 404, "not_found")
    assert_error(client.get("/api/v2/nothing/here"), 404, "not_found")
    assert_error(APIClient().get("/api/nope"), 404, "not_found")
    assert_error(APIClient(enforce_csrf_checks=True).post("/api/v1/nope", {}), 404, "not_found")


def test_wrong_method_is_json(client):
    response = client.put(LISTINGS)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


class _Prediction:
    model_version = "v0007"
    probabilities = [{"allowed": 0.25, "weapon": 0.75}]


def test_score_answers_synchronously_and_stores_nothing(client, media_root, monkeypatch, calls_in_process):
    seen = []

    class Scorer:
        def predict(self, payloads):
            seen.extend(payloads)
            return _Prediction()

    monkeypatch.setattr(worker, "get_scorer", Scorer)
    response = client.post("/api/v1/score", {"image": images.upload(images.exif_rotated_jpeg())}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json() == {"model_version": "v0007", "probabilities": {"allowed": 0.25, "weapon": 0.75}}
    # The model sees the re-encoded, upright copy, as a worker would.
    assert len(seen) == 1 and seen[0] != images.exif_rotated_jpeg()
    assert not Listing.objects.exists() and not ListingImage.objects.exists()
    assert not media_root.exists()


def test_score_without_an_active_model_is_503_json(client, monkeypatch, calls_in_process):
    from classifier.scoring import NoActiveModel

    class Scorer:
        def predict(self, payloads):
            raise NoActiveModel("no active model")

    monkeypatch.setattr(worker, "get_scorer", Scorer)
    response = client.post("/api/v1/score", {"image": images.upload(images.png_bytes())}, format="multipart")
    assert_error(response, 503, "no_active_model")


def test_score_refuses_bad_images_before_the_model(client, monkeypatch, calls_in_process):
    monkeypatch.setattr(worker, "get_scorer", lambda: pytest.fail("the model must not run"))
    response = client.post("/api/v1/score", {"image": images.upload(images.truncated_jpeg())}, format="multipart")
    assert_error(response, 400, "corrupt")
    assert_error(client.post("/api/v1/score", {}, format="multipart"), 400, "invalid")


def test_schema_and_offline_docs_page():
    anonymous = APIClient()
    schema = anonymous.get("/api/schema", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {
        "/api/v1/listings",
        "/api/v1/listings/{listing_id}",
        "/api/v1/listings/{listing_id}/images",
        "/api/v1/events",
        "/api/v1/score",
        "/api/v1/health",
    } <= set(paths)
    docs = anonymous.get("/api/docs")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "drf_spectacular_sidecar/redoc" in html
    assert "cdn.jsdelivr" not in html and "unpkg" not in html


def test_url_names():
    assert reverse("api-listings") == LISTINGS
    assert reverse("api-listing-detail", args=[3]) == f"{LISTINGS}/3"
    assert reverse("api-score") == "/api/v1/score"
    assert reverse("api-health") == "/api/v1/health"


def test_create_api_token_prints_a_new_key_last_that_authenticates_for_its_client(user):
    from moderation.models import ClientKey

    out = io.StringIO()
    call_command("create_api_token", "marketplace", "--client", "acme", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    stored = ClientKey.objects.get_from_key(key)
    assert (stored.client.name, stored.user, stored.revoked) == ("acme", user, False)
    assert key not in {stored.hashed_key, stored.id}  # only a hash is kept
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(LISTINGS).status_code == 200
    # Asking again makes another key; --rotate revokes the earlier ones.
    again = io.StringIO()
    call_command("create_api_token", "marketplace", "--client", "acme", "--rotate", stdout=again)
    assert again.getvalue().strip().splitlines()[-1] != key
    assert not ClientKey.objects.get(pk=stored.pk).is_valid(key) or ClientKey.objects.get(pk=stored.pk).revoked
    assert_error(client.get(LISTINGS), 401, "authentication_failed")


def test_create_api_token_for_a_missing_user_fails_clearly():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "ghost")
    assert not get_user_model().objects.filter(username="ghost").exists()


def test_schema_is_valid_without_warnings(tmp_path):
    # `check --deploy` fails on drf-spectacular warnings, so the schema must generate cleanly.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    assert "ImageStatusEnum" in schema
    # Health documents the serving report it returns, down to each worker process's fields.
    assert "ServingWorker" in schema and "load_seconds" in schema


def test_score_with_the_real_scorer_and_an_empty_registry_is_503(
    client, settings, tmp_path, monkeypatch, calls_in_process
):
    settings.VIGIA_MODEL_REGISTRY = tmp_path / "models"
    monkeypatch.setattr(worker, "_scorer", None)
    monkeypatch.setattr(worker, "_owner_pid", None)
    response = client.post("/api/v1/score", {"image": images.upload(images.png_bytes())}, format="multipart")
    assert_error(response, 503, "no_active_model")


@pytest.mark.parametrize("broker", ["nobody listening", "unreachable"])
def test_score_without_a_worker_to_answer_is_503_with_retry_after(client, settings, broker):
    from tests.support.workers import SILENT_DB, point_celery_at, redis_url

    settings.VIGIA_SCORE_TIMEOUT_SECONDS = 0.5
    original = point_celery_at(redis_url(SILENT_DB) if broker == "nobody listening" else "redis://127.0.0.1:1/0")
    try:
        response = client.post("/api/v1/score", {"image": images.upload(images.png_bytes())}, format="multipart")
    finally:
        point_celery_at(original)
    assert_error(response, 503, "scoring_unavailable")
    assert response["Retry-After"] == "5"
