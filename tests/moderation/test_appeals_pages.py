"""The desk's Appeals queue, an appeal's page, the moderator record, and appeals on the listing and settings pages."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from moderation.models import Appeal, AppealStatus, ListingStatus
from moderation.permissions import ensure_groups
from moderation.selectors.settings import get_settings
from moderation.services import appeals, review
from tests.support.factories import make_flagged, taken_down_listing

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(db):
    _, admins = ensure_groups()
    user = get_user_model().objects.create_user("boss", password="pw-for-tests-only")
    user.groups.add(admins)
    return user


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def appeal_of(listing, text="It is a costume piece, allowed by your rules.") -> Appeal:
    return appeals.file_appeal(listing_id=listing.pk, client=listing.client, text=text).appeal


@pytest.fixture
def appeal(moderator, media_root, active_model):
    return appeal_of(taken_down_listing(moderator=moderator))


def rows(html: str, css_class: str) -> list[str]:
    return re.findall(rf'<tr class="{css_class}" data-appeal="(\d+)"', html)


def test_the_queue_lists_open_appeals_oldest_first_with_text_photos_and_who_decided(
    frozen_clock, moderator, reviewer, media_root, active_model
):
    older = appeal_of(taken_down_listing(moderator=moderator), text="Older appeal text")
    frozen_clock.advance(minutes=5)
    newer = appeal_of(taken_down_listing(moderator=moderator), text="Newer appeal text")
    frozen_clock.advance(minutes=5)
    decided = appeal_of(taken_down_listing(moderator=moderator))
    appeals.decide_appeal(appeal_id=decided.pk, user=reviewer, outcome="uphold", note="Stands.")
    html = browser(reviewer).get(reverse("appeals")).content.decode()
    assert rows(html, "appeal-row") == [str(older.pk), str(newer.pk)]
    assert "Older appeal text" in html and "Newer appeal text" in html
    confirmation = older.contested.get()
    assert f'class="thumb blurred" href="{reverse("review-item", args=[confirmation.image_id])}"' in html
    assert f'<span class="decided-by">{moderator.username}</span>' in html
    assert confirmation.created_at.strftime("%Y-%m-%d %H:%M") in html
    assert 'id="open-appeals">2 open<' in html


def test_the_queue_pages_after_an_appeal(frozen_clock, moderator, reviewer, media_root, active_model, monkeypatch):
    from moderation.selectors import appeals as selectors

    monkeypatch.setattr(selectors, "PAGE_SIZE", 2)
    filed = []
    for _ in range(3):
        filed.append(appeal_of(taken_down_listing(moderator=moderator)).pk)
        frozen_clock.advance(minutes=1)
    page = selectors.open_appeals_page()
    assert [a.pk for a in page.appeals] == filed[:2] and page.next_cursor == filed[1]
    rest = selectors.open_appeals_page(after=page.next_cursor)
    assert [a.pk for a in rest.appeals] == filed[2:] and rest.next_cursor is None
    client = browser(reviewer)
    first = client.get(reverse("appeals")).content.decode()
    assert rows(first, "appeal-row") == [str(pk) for pk in filed[:2]]
    assert f'href="{reverse("appeals")}?after={filed[1]}">Next page' in first
    second = client.get(reverse("appeals"), {"after": filed[1]}).content.decode()
    assert rows(second, "appeal-row") == [str(filed[2])] and "Next page" not in second and "First page" in second


def test_the_moderator_who_decided_sees_the_appeal_but_no_buttons_and_their_post_is_refused(appeal, moderator):
    client = browser(moderator)
    page = client.get(reverse("appeal-detail", args=[appeal.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "It is a costume piece" in html
    assert 'id="overturn-button"' not in html and 'id="uphold-button"' not in html
    assert 'id="not-yours"' in html
    assert "you decided" in client.get(reverse("appeals")).content.decode()
    response = client.post(reverse("appeal-decide", args=[appeal.pk]), {"outcome": "overturn", "note": "Mine, wrong."})
    assert response.status_code == 403
    appeal.refresh_from_db()
    assert appeal.status == AppealStatus.OPEN
    assert appeal.listing.status == ListingStatus.TAKEN_DOWN


def test_another_moderator_overturns_from_the_page_and_a_second_submit_is_409(appeal, reviewer):
    client = browser(reviewer)
    html = client.get(reverse("appeal-detail", args=[appeal.pk])).content.decode()
    assert 'id="overturn-button"' in html and 'id="uphold-button"' in html
    url = reverse("appeal-decide", args=[appeal.pk])
    response = client.post(url, {"outcome": "overturn", "note": "A costume: allowed."})
    assert response.status_code == 302 and response["Location"] == reverse("appeals")
    appeal.refresh_from_db()
    assert appeal.status == AppealStatus.OVERTURNED
    assert appeal.listing.status == ListingStatus.LIVE
    again = client.post(url, {"outcome": "uphold", "note": "Changed my mind."})
    assert again.status_code == 409
    assert Appeal.objects.get(pk=appeal.pk).status == AppealStatus.OVERTURNED
    html = client.get(reverse("appeal-detail", args=[appeal.pk])).content.decode()
    assert 'id="appeal-outcome"' in html and "A costume: allowed." in html and 'id="overturn-button"' not in html


def test_a_decision_without_a_note_is_refused_with_the_form_again(appeal, reviewer):
    response = browser(reviewer).post(reverse("appeal-decide", args=[appeal.pk]), {"outcome": "overturn", "note": ""})
    assert response.status_code == 400
    assert 'id="appeal-form"' in response.content.decode()
    assert Appeal.objects.get(pk=appeal.pk).status == AppealStatus.OPEN


def test_an_overturn_counts_as_a_correction_on_the_moderator_record(
    moderator, reviewer, admin_user, media_root, active_model
):
    appealed = appeal_of(taken_down_listing(moderator=moderator, images=2))
    taken_down_listing(moderator=moderator)  # a third confirmation, which stands
    rejected = make_flagged()
    review.claim_item(user=moderator, image_id=rejected.pk)
    review.decide(user=moderator, image_id=rejected.pk, outcome="reject")
    undone = make_flagged()
    review.claim_item(user=moderator, image_id=undone.pk)
    slip = review.decide(user=moderator, image_id=undone.pk, outcome="confirm")
    review.undo_decision(user=moderator, decision_id=slip.pk)
    appeals.decide_appeal(appeal_id=appealed.pk, user=reviewer, outcome="overturn", note="Both allowed.")

    html = browser(admin_user).get(reverse("moderator-record")).content.decode()
    cells = dict(re.findall(r'<td class="([\w-]+)">([^<]*)</td>', row_of(html, moderator.username)))
    assert cells == {
        "decisions": "5",
        "confirmations": "4",
        "rejections": "1",
        "undone": "1",
        "overturned": "2",
        "correction-rate": "66.7%",
        "appeals-decided": "0",
    }
    theirs = dict(re.findall(r'<td class="([\w-]+)">([^<]*)</td>', row_of(html, reviewer.username)))
    assert theirs["decisions"] == "0" and theirs["appeals-decided"] == "1" and theirs["correction-rate"] == "—"


def row_of(html: str, username: str) -> str:
    match = re.search(rf'<tr data-moderator="{username}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {username}"
    return match.group(1)


def test_the_nav_links_the_moderator_record_for_admins_only(moderator, admin_user):
    url = reverse("moderator-record")
    assert f'href="{url}"' in browser(admin_user).get(reverse("queue")).content.decode()
    moderator_html = browser(moderator).get(reverse("queue")).content.decode()
    assert f'href="{url}"' not in moderator_html
    assert f'href="{reverse("appeals")}"' in moderator_html


def test_the_listing_page_shows_its_appeals_and_marks_the_overturned_decision(appeal, reviewer):
    appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome="overturn", note="Allowed.")
    html = browser(reviewer).get(reverse("listing-detail", args=[appeal.listing_id])).content.decode()
    assert 'id="appeals"' in html and f'href="{reverse("appeal-detail", args=[appeal.pk])}"' in html
    assert "Overturned (the listing is restored)" in html
    assert '<li class="overturned">' in html and "overturned on appeal" in html
    assert f"made on appeal {appeal.pk}" in html


def test_the_settings_page_sets_the_appeal_window(admin_user):
    client = browser(admin_user)
    page = client.get(reverse("moderation-settings")).content.decode()
    assert 'name="appeal_window_days"' in page and 'value="183"' in page
    form = {
        name: value
        for name, value in re.findall(r'<input[^>]*name="(\w+)"[^>]*value="([^"]*)"', page)
        if name != "csrfmiddlewaretoken"
    }
    form.update({"audit_sampling": "by_score", "gate_metric": "recall", "appeal_window_days": "30"})
    response = client.post(reverse("moderation-settings"), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert get_settings().appeal_window_days == 30
