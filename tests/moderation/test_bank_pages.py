"""The Hash banks pages, and the match and the group as moderators see them on the item and queue pages."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from moderation.models import AuditAction, AuditEntry, BankAction, BankEntry, BankKind, DecisionOutcome, HashBank
from moderation.services import banks
from tests.support.banks import decided, scored_photo
from tests.support.factories import make_user
from tests.support.images import mirrored

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bank_desk")]
GOOD, OTHER = "a" * 64, "b" * 64


@pytest.fixture
def admin_client(client, boss):
    client.force_login(boss)
    return client


@pytest.fixture
def shared(boss):
    return banks.create_bank(user=boss, name="Shared", labels=["weapons"])


def test_the_list_shows_every_bank_and_creates_an_imported_one(admin_client):
    banks.decision_bank(BankKind.CONFIRMED)
    page = admin_client.get(reverse("banks"))
    assert page.status_code == 200 and b"Confirmed" in page.content
    response = admin_client.post(
        reverse("banks"),
        {"name": "Partner", "action": BankAction.TAKE_DOWN, "match_distance": 20, "quality_floor": 60, "enabled": "on"},
    )
    bank = HashBank.objects.get(name="Partner")
    assert response.status_code == 302 and (bank.kind, bank.match_distance, bank.enabled) == ("imported", 20, True)


def test_an_import_with_bad_lines_shows_each_of_them_and_stores_nothing(admin_client, shared):
    text = f"{GOOD},weapons\nnot-a-hash\n{GOOD}\n{OTHER},knives\n"
    response = admin_client.post(reverse("bank-import", args=[shared.pk]), {"text": text})
    body = response.content.decode()
    assert response.status_code == 400
    assert "Line 2:" in body and "Line 3: the same hash as line 1" in body and "Line 4: unknown label" in body
    assert not BankEntry.objects.exists()


def test_a_file_imports_and_exports_back(admin_client, shared):
    upload = SimpleUploadedFile("hashes.txt", f"{GOOD},weapons\n{OTHER}\n".encode())
    assert admin_client.post(reverse("bank-import", args=[shared.pk]), {"file": upload}).status_code == 302
    export = admin_client.get(reverse("bank-export", args=[shared.pk]))
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert export["Content-Disposition"].startswith("attachment") and lines[-2:] == [f"{GOOD},weapons", OTHER]


def test_settings_change_through_the_page_and_the_trail_says_who(admin_client, boss):
    bank = banks.decision_bank(BankKind.CLEARED)
    form = {"action": BankAction.CLEAR, "match_distance": 25, "quality_floor": 49, "enabled": "on", "labels": ""}
    assert admin_client.post(reverse("bank-detail", args=[bank.pk]), form).status_code == 302
    bank.refresh_from_db()
    assert (bank.action, bank.match_distance) == (BankAction.CLEAR, 25)
    assert AuditEntry.objects.get(action=AuditAction.BANK_CHANGED).actor == boss
    bad = {**form, "match_distance": 99}
    assert admin_client.post(reverse("bank-detail", args=[bank.pk]), bad).status_code == 400


def test_removing_an_entry_asks_why_and_is_audited(admin_client, shared, boss):
    banks.import_hashes(bank_id=shared.pk, text=GOOD, user=boss)
    entry = BankEntry.objects.get()
    url = reverse("bank-entry-remove", args=[shared.pk, entry.pk])
    admin_client.post(url, {"reason": ""})
    assert BankEntry.objects.get().removed_at is None
    admin_client.post(url, {"reason": "a false match"})
    assert BankEntry.objects.get().removal_reason == "a false match"
    assert AuditEntry.objects.filter(action=AuditAction.BANK_ENTRY_REMOVED, actor=boss).exists()
    removed = admin_client.get(reverse("bank-detail", args=[shared.pk]) + "?removed=1")
    assert b"a false match" in removed.content


def test_the_item_page_shows_the_match_beside_the_banked_photo_with_its_distance(client, moderator):
    original = scored_photo("coffee")
    decided(original, moderator, DecisionOutcome.REJECT)
    copy = scored_photo("coffee", transform=mirrored)
    client.force_login(moderator)
    body = client.get(reverse("review-item", args=[copy.pk])).content.decode()
    match = copy.matches.get()
    assert 'id="bank-matches"' in body and f"at distance <strong>{match.distance}</strong>" in body
    assert reverse("image-file", args=[original.pk]) in body and reverse("image-file", args=[copy.pk]) in body


def test_the_queue_shows_a_group_once_with_its_count(client, moderator):
    lead = scored_photo("chelsea")
    scored_photo("chelsea", transform=mirrored)
    client.force_login(moderator)
    body = client.get(reverse("queue")).content.decode()
    assert body.count(reverse("review-item", args=[lead.pk])) == 1 and "2 copies" in body
    item = client.get(reverse("review-item", args=[lead.pk])).content.decode()
    assert "1 near-duplicate waiting" in item


def test_the_api_listing_shows_matches_and_automated_decisions(client, moderator):
    from rest_framework.test import APIClient

    from moderation.models import DESK_CLIENT_NAME
    from tests.support.factories import make_api_key

    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    copy = scored_photo("chelsea", transform=mirrored)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {make_api_key(make_user('market'), client_name=DESK_CLIENT_NAME)}")
    response = api.get(reverse("api-listing-detail", args=[copy.listing_id]))
    image = response.json()["images"][0]
    assert image["matches"][0]["bank"] == "Confirmed" and image["matches"][0]["action"] == "take_down"
    assert image["decisions"][0]["automated"] is True
