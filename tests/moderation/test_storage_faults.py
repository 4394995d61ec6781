"""Uploads when the media storage fails: a full disk (a real, small tmpfs filled up) answers 507, a read-only one
503, both in the API's JSON shape, with no row and no file left behind; a failure after the commit never deletes
the photos of rows that were stored."""

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.test import APIClient

from moderation import outbox
from moderation.models import Listing, ListingImage
from moderation.services import ingest
from tests.support import images
from tests.support.factories import make_api_key, store_listing

pytestmark = pytest.mark.django_db

LISTINGS = "/api/v1/listings"


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str):
    """A real tmpfs of `size` mounted at `path` (root only: skipped elsewhere), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until the file system has no room left; returns it."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def files_under(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}


@pytest.fixture
def api():
    client = APIClient()
    user = get_user_model().objects.create_user("marketplace", password="pw-for-tests-only")
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(user)}")
    return client


def post(api, external_id: str):
    photos = [images.upload(images.noisy_png((200, 30, 30), seed=seed, size=96), name="p.png") for seed in (1, 2)]
    return api.post(LISTINGS, {"external_id": external_id, "title": "Lamp", "images": photos}, format="multipart")


def test_a_full_media_disk_answers_507_json_and_stores_no_row_and_no_file(api, settings, tmp_path, queued):
    with tmpfs(tmp_path / "media", "256k") as media:
        settings.MEDIA_ROOT = media
        filler = fill(media)
        response = post(api, "full-1")
        assert response.status_code == 507, response.content
        assert response["Content-Type"].startswith("application/json")
        assert response["Retry-After"] == "60"
        assert response.json()["error"] == "storage_full"
        assert not Listing.objects.exists() and not ListingImage.objects.exists()
        assert files_under(media) == {"filler"}
        assert queued == []

        # Room again: the same request goes through, as a client's retry would.
        filler.unlink()
        response = post(api, "full-1")
        assert response.status_code == 201, response.content
        stored = set(ListingImage.objects.values_list("file", flat=True))
        assert len(stored) == 2 and files_under(media) == stored


def test_the_desk_upload_page_says_the_disk_is_full_with_507_and_keeps_the_form(client, moderator, settings, tmp_path):
    from django.urls import reverse

    client.force_login(moderator)
    with tmpfs(tmp_path / "media", "256k") as media:
        settings.MEDIA_ROOT = media
        fill(media)
        photo = images.upload(images.noisy_png((200, 30, 30), seed=3, size=96), name="p.png")
        response = client.post(reverse("upload"), {"external_id": "desk-full", "title": "Lamp", "images": [photo]})
        assert response.status_code == 507
        assert "desk-full" in response.content.decode()  # the form comes back filled in, to send again
        assert not Listing.objects.exists() and files_under(media) == {"filler"}


def test_a_read_only_media_disk_answers_503_json_and_stores_nothing(api, settings, tmp_path):
    with tmpfs(tmp_path / "media", "1m", "ro") as media:
        settings.MEDIA_ROOT = media
        response = post(api, "ro-1")
        assert response.status_code == 503, response.content
        assert response.json()["error"] == "storage_unavailable"
        assert not Listing.objects.exists()
        assert files_under(media) == set()


@pytest.mark.django_db(transaction=True)
def test_a_failure_after_the_commit_never_deletes_the_photos_of_stored_rows(media_root, monkeypatch, published):
    real_send = outbox.send_on_commit

    def send_then_fail_after_commit(task_name, *args):
        real_send(task_name, *args)
        # Something that goes wrong once the rows are committed (a non-robust callback here).
        transaction.on_commit(lambda: (_ for _ in ()).throw(RuntimeError("after the commit")))

    monkeypatch.setattr(outbox, "send_on_commit", send_then_fail_after_commit)
    with pytest.raises(RuntimeError, match="after the commit"):
        store_listing(external_id="late-1", files=[images.upload(images.jpeg_bytes())])
    image = ListingImage.objects.get(listing__external_id="late-1")
    assert Path(image.file.path).is_file()


def test_only_files_no_row_refers_to_are_discarded(media_root):
    stored = store_listing(external_id="kept-1", files=[images.upload(images.jpeg_bytes())]).images.get()
    stray = media_root / "images" / "stray.jpg"
    stray.write_bytes(b"partial")
    ingest.discard_unreferenced([stored.file.name, "images/stray.jpg"])
    assert Path(stored.file.path).is_file() and not stray.exists()
