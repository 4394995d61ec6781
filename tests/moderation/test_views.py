"""The review desk in the browser, through Django's test client: pages, decisions, 409s, files, upload, admin."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from moderation.models import Decision, ImageStatus, ListingImage, ListingStatus, Score
from moderation.permissions import ADMINS, MODERATORS, is_admin, is_moderator
from moderation.services import review
from tests.support.factories import make_flagged, make_moderator

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def moderator(db):
    return make_moderator()


@pytest.fixture
def mod_client(client, moderator):
    client.force_login(moderator)
    return client


def assert_no_inline_code(html: str):
    """The CSP forbids inline scripts and styles; pages must not depend on them."""
    assert not INLINE_SCRIPT.search(html)
    assert "style=" not in html
    assert "<style" not in html


@pytest.mark.django_db
def test_queue_page_lists_flagged_items_with_counts_and_blurred_thumbnails(mod_client):
    make_flagged(0.91, title="Hunting knife")
    make_flagged(0.55, title="Leather bag", is_audit=True)
    make_flagged(0.99, title="Cleared thing", status=ImageStatus.CLEARED)
    response = mod_client.get(reverse("queue"))
    html = response.content.decode()
    assert response.status_code == 200
    assert html.index("Hunting knife") < html.index("Leather bag")
    assert "Cleared thing" not in html
    assert '<dd id="stat-open">2</dd>' in html
    assert 'class="thumb blurred"' in html
    assert "Start reviewing" in html
    assert response["Content-Security-Policy"].startswith("default-src 'self'")
    assert_no_inline_code(html)


@pytest.mark.django_db
def test_queue_page_escapes_listing_text(mod_client):
    make_flagged(title="<script>alert(1)</script>")
    html = mod_client.get(reverse("queue")).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.django_db
def test_start_reviewing_claims_and_opens_the_top_item(mod_client, moderator):
    top = make_flagged(0.95, title="Top")
    make_flagged(0.6)
    response = mod_client.post(reverse("review-next"))
    assert response.status_code == 302
    assert response["Location"] == reverse("review-item", args=[top.pk])
    top.refresh_from_db()
    assert top.claimed_by == moderator


@pytest.mark.django_db
def test_start_reviewing_on_an_empty_queue_goes_back_to_the_queue(mod_client):
    response = mod_client.post(reverse("review-next"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("queue")
    assert "The queue is empty" in response.content.decode()


@pytest.mark.django_db
def test_item_page_shows_image_text_bars_model_and_audit_badge(mod_client, moderator):
    image = make_flagged(0.8, title="Old rifle", label="weapon", is_audit=True)
    image.listing.description = "Works <b>great</b>"
    image.listing.save()
    Score.objects.create(
        image=image,
        model_version="v0001",
        probabilities={"weapon": 0.8, "bag": 0.2},
        prohibited_probability=0.8,
        prohibited_label="weapon",
    )
    response = mod_client.get(reverse("review-item", args=[image.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Old rifle" in html
    assert "Works &lt;b&gt;great&lt;/b&gt;" in html
    assert html.count("<meter") == 2
    assert "v0001" in html
    assert 'class="badge audit"' in html
    assert reverse("image-file", args=[image.pk]) in html
    assert 'id="confirm-button"' in html and 'id="reject-button"' in html
    assert "moderation/review.js" in html
    assert_no_inline_code(html)
    image.refresh_from_db()
    assert image.claimed_by == moderator


@pytest.mark.django_db
def test_item_claimed_by_someone_else_is_read_only(mod_client):
    image = make_flagged()
    review.claim_next(user=make_moderator())
    html = mod_client.get(reverse("review-item", args=[image.pk])).content.decode()
    assert "being reviewed by someone else" in html
    assert 'id="confirm-button"' not in html


@pytest.mark.django_db
def test_confirm_takes_down_the_listing_and_loads_the_next_item(mod_client, moderator):
    image = make_flagged(0.95)
    following = make_flagged(0.7)
    mod_client.post(reverse("review-next"))
    response = mod_client.post(
        reverse("review-decide", args=[image.pk]), {"outcome": "confirm", "policy_category": "weapons", "note": "n"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("review-item", args=[following.pk])
    image.refresh_from_db()
    assert image.status == ImageStatus.CONFIRMED
    assert image.listing.status == ListingStatus.TAKEN_DOWN
    decision = Decision.objects.get(image=image)
    assert (decision.policy_category, decision.note, decision.moderator) == ("weapons", "n", moderator)


@pytest.mark.django_db
def test_double_submitted_decision_answers_409_and_stores_one(mod_client):
    image = make_flagged()
    mod_client.post(reverse("review-next"))
    url = reverse("review-decide", args=[image.pk])
    first = mod_client.post(url, {"outcome": "confirm", "policy_category": "weapons"})
    second = mod_client.post(url, {"outcome": "confirm", "policy_category": "weapons"})
    assert first.status_code == 302
    assert second.status_code == 409
    assert Decision.objects.filter(image=image).count() == 1


@pytest.mark.django_db
def test_decision_on_an_expired_or_foreign_claim_is_409(mod_client, frozen_clock):
    image = make_flagged()
    url = reverse("review-decide", args=[image.pk])
    assert mod_client.post(url, {"outcome": "confirm"}).status_code == 409
    mod_client.post(reverse("review-next"))
    frozen_clock.advance(hours=1)
    assert mod_client.post(url, {"outcome": "confirm"}).status_code == 409
    assert not Decision.objects.exists()


@pytest.mark.django_db
def test_reject_ignores_the_category_and_invalid_outcome_is_400(mod_client):
    image = make_flagged()
    mod_client.post(reverse("review-next"))
    url = reverse("review-decide", args=[image.pk])
    assert mod_client.post(url, {"outcome": "maybe"}).status_code == 400
    assert mod_client.post(url, {"outcome": "reject", "policy_category": "weapons"}).status_code == 302
    assert Decision.objects.get().policy_category == "none"


@pytest.mark.django_db
def test_undo_from_the_page_after_deciding(mod_client, moderator):
    image = make_flagged(0.9)
    handed_out_next = make_flagged(0.5)
    mod_client.post(reverse("review-next"))
    mod_client.post(reverse("review-decide", args=[image.pk]), {"outcome": "confirm"})
    assert ListingImage.objects.get(pk=handed_out_next.pk).claimed_by == moderator
    queue_html = mod_client.get(reverse("queue")).content.decode()
    decision = Decision.objects.get()
    assert reverse("decision-undo", args=[decision.pk]) in queue_html
    response = mod_client.post(reverse("decision-undo", args=[decision.pk]))
    assert response["Location"] == reverse("review-item", args=[image.pk])
    image.refresh_from_db()
    assert image.status == ImageStatus.FLAGGED
    assert image.listing.status == ListingStatus.IN_REVIEW
    assert list(ListingImage.objects.filter(claimed_by=moderator).values_list("pk", flat=True)) == [image.pk]
    assert mod_client.post(reverse("decision-undo", args=[decision.pk])).status_code == 409
    history = mod_client.get(reverse("review-item", args=[image.pk])).content.decode()
    assert 'class="undone"' in history


@pytest.mark.django_db
def test_skip_moves_on_and_returns_skipped_items_when_nothing_else_is_left(mod_client):
    first, second = make_flagged(0.9), make_flagged(0.8)
    mod_client.post(reverse("review-next"))
    response = mod_client.post(reverse("review-next"), {"skip": str(first.pk)})
    assert response["Location"] == reverse("review-item", args=[second.pk])
    response = mod_client.post(reverse("review-next"), {"skip": str(second.pk)})
    assert response["Location"] == reverse("review-item", args=[first.pk])


@pytest.mark.django_db
def test_renew_and_release_endpoints(mod_client, moderator, frozen_clock):
    image = make_flagged()
    mod_client.post(reverse("review-next"))
    frozen_clock.advance(seconds=50)
    response = mod_client.post(reverse("review-renew", args=[image.pk]))
    assert response.status_code == 200
    image.refresh_from_db()
    assert image.claim_expires_at == frozen_clock.current + review._lease()
    response = mod_client.post(reverse("review-release", args=[image.pk]), {"beacon": "1"})
    assert response.json() == {"released": True}
    image.refresh_from_db()
    assert image.claimed_by is None
    review.claim_next(user=make_moderator())
    renewed = mod_client.post(reverse("review-renew", args=[image.pk]))
    assert renewed.status_code == 409
    assert renewed.json()["error"] == "stale_claim"


@pytest.mark.django_db
def test_image_file_is_served_with_its_content_type_and_nosniff(mod_client, client):
    image = make_flagged(with_file=True)
    response = mod_client.get(reverse("image-file", args=[image.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    missing = make_flagged()
    assert mod_client.get(reverse("image-file", args=[missing.pk])).status_code == 404
    assert mod_client.get(reverse("image-file", args=[999999])).status_code == 404


@pytest.mark.django_db
def test_listing_pages_show_images_scores_and_decisions(mod_client, moderator):
    image = make_flagged(0.9, title="Sword")
    Score.objects.create(image=image, model_version="v0001", probabilities={"weapon": 0.9}, prohibited_probability=0.9)
    review.claim_next(user=moderator)
    review.decide(user=moderator, image_id=image.pk, outcome="confirm", note="clear case")
    listing_html = mod_client.get(reverse("listings")).content.decode()
    assert "Sword" in listing_html
    assert mod_client.get(reverse("listings") + "?status=taken_down").content.decode().count("Sword") == 1
    assert "Sword" not in mod_client.get(reverse("listings") + "?status=live").content.decode()
    detail = mod_client.get(reverse("listing-detail", args=[image.listing_id])).content.decode()
    assert "Taken down" in detail and "v0001" in detail and "clear case" in detail
    assert mod_client.get(reverse("listing-detail", args=[999999])).status_code == 404


@pytest.mark.django_db
def test_nav_shows_admin_links_only_to_admins(client):
    call_command("create_moderator", "boss", "--password", "pw-boss-123", "--admin")
    call_command("create_moderator", "mod", "--password", "pw-mod-123")
    client.force_login(get_user_model().objects.get(username="mod"))
    mod_html = client.get(reverse("queue")).content.decode()
    assert reverse("admin:index") not in mod_html
    client.force_login(get_user_model().objects.get(username="boss"))
    admin_html = client.get(reverse("queue")).content.decode()
    assert reverse("admin:index") in admin_html


@pytest.mark.django_db
def test_create_moderator_creates_updates_and_generates_passwords(capsys):
    call_command("create_moderator", "alice")
    output = capsys.readouterr().out
    password = re.search(r"Password: (\S+)", output).group(1)
    alice = get_user_model().objects.get(username="alice")
    assert alice.check_password(password)
    assert is_moderator(alice) and not is_admin(alice) and not alice.is_staff
    call_command("create_moderator", "alice", "--password", "new-pass-456", "--admin")
    output = capsys.readouterr().out
    assert "Updated admin alice" in output and "Password:" not in output
    alice.refresh_from_db()
    assert alice.check_password("new-pass-456")
    assert alice.is_staff
    assert set(alice.groups.values_list("name", flat=True)) == {MODERATORS, ADMINS}
    assert is_admin(get_user_model().objects.get(username="alice"))


@pytest.mark.django_db
def test_admin_changelists_render_for_every_model(client):
    call_command("create_moderator", "boss", "--password", "pw-boss-123", "--admin")
    client.force_login(get_user_model().objects.get(username="boss"))
    image = make_flagged()
    Score.objects.create(image=image, model_version="v1", probabilities={"a": 1.0}, prohibited_probability=1.0)
    for model in (
        "listing",
        "listingimage",
        "score",
        "decision",
        "moderationsettings",
        "trainingexample",
        "trainingrun",
        "trainingstate",
        "modelversion",
    ):
        assert client.get(reverse(f"admin:moderation_{model}_changelist")).status_code == 200, model
    change_page = client.get(reverse("admin:moderation_listingimage_change", args=[image.pk]))
    assert change_page.status_code == 200
    assert reverse("image-file", args=[image.pk]) in change_page.content.decode()
    assert client.get(reverse("admin:moderation_listing_change", args=[image.listing_id])).status_code == 200


@pytest.mark.django_db
def test_login_page_signs_in_and_logout_is_a_post(client):
    call_command("create_moderator", "mod", "--password", "pw-mod-123")
    page = client.get(reverse("login"))
    assert page.status_code == 200 and "csrfmiddlewaretoken" in page.content.decode()
    assert_no_inline_code(page.content.decode())
    response = client.post(reverse("login"), {"username": "mod", "password": "pw-mod-123"})
    assert response["Location"] == reverse("queue")
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("queue")).status_code == 302


@pytest.mark.django_db
def test_upload_form_refuses_bad_files_with_a_clear_error(mod_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    junk = SimpleUploadedFile("notes.png", b"this is not an image at all", content_type="image/png")
    response = mod_client.post(reverse("upload"), {"external_id": "up-1", "title": "t", "images": [junk]})
    assert response.status_code == 400
    assert "notes.png" in response.content.decode()
    assert not ListingImage.objects.exists()


@pytest.mark.django_db
def test_upload_form_stores_a_listing_with_its_images(mod_client, moderator):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from moderation.models import Listing
    from tests.support.images import jpeg_bytes, png_bytes

    files = [
        SimpleUploadedFile("a.jpg", jpeg_bytes(), content_type="image/jpeg"),
        SimpleUploadedFile("b.png", png_bytes(), content_type="image/png"),
    ]
    response = mod_client.post(
        reverse("upload"), {"external_id": "up-2", "title": "Two photos", "description": "d", "images": files}
    )
    listing = Listing.objects.get(external_id="up-2")
    assert response["Location"] == reverse("listing-detail", args=[listing.pk])
    assert listing.submitted_by == moderator
    assert sorted(listing.images.values_list("image_format", flat=True)) == ["JPEG", "PNG"]
    again = mod_client.post(
        reverse("upload"),
        {"external_id": "up-2", "images": [SimpleUploadedFile("c.png", png_bytes(), content_type="image/png")]},
    )
    assert again.status_code == 400
    assert "already exists" in again.content.decode()
    assert Listing.objects.count() == 1


@pytest.mark.django_db
def test_queue_page_shows_capped_counts_with_a_plus(mod_client, monkeypatch):
    monkeypatch.setattr("moderation.selectors.queue.COUNT_CAP", 2)
    for _ in range(3):
        make_flagged()
    assert '<dd id="stat-open">2+</dd>' in mod_client.get(reverse("queue")).content.decode()


@pytest.mark.django_db
def test_nav_links_the_admin_pages_only_for_admins(client):
    call_command("create_moderator", "boss", "--password", "pw-boss-123", "--admin")
    call_command("create_moderator", "mod", "--password", "pw-mod-123")
    names = ("training-runs", "model-versions", "moderation-settings")
    urls = [reverse(name) for name in names]
    client.force_login(get_user_model().objects.get(username="mod"))
    mod_html = client.get(reverse("queue")).content.decode()
    assert not any(f'href="{url}"' in mod_html for url in urls)
    client.force_login(get_user_model().objects.get(username="boss"))
    admin_html = client.get(reverse("queue")).content.decode()
    assert all(f'href="{url}"' in admin_html for url in urls)
