"""End to end in a real browser: a moderator signs in, claims a flagged image, confirms it with `c`.

Drives Debian's Chromium through Playwright against pytest-django's live server. The flagged image is made
directly in the database, so no model is needed. Skips only when /usr/bin/chromium is not installed.
"""

import os
from pathlib import Path

import pytest
from django.db import connections

from moderation.models import Decision, ImageStatus, ListingImage, ListingStatus
from moderation.selectors.settings import get_settings
from tests.support.factories import make_flagged, make_moderator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_page(monkeypatch, settings, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser test needs it")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls here are still sequential.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.MEDIA_ROOT = tmp_path / "media"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.console_errors = errors
            yield page
        finally:
            browser.close()
            # ORM calls made while Playwright's loop ran may hold a connection of their own context; close it.
            connections.close_all()


def test_moderator_confirms_with_the_keyboard_and_the_listing_is_taken_down(browser_page, live_server):
    page = browser_page
    make_moderator("maria", password="review-desk-pass")
    image = make_flagged(0.97, title="Replica pistol", label="weapon", with_file=True)
    assert os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE") == "true"

    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "maria")
    page.fill("#id_password", "review-desk-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert "Replica pistol" in page.content()

    page.click("#start-reviewing")
    page.wait_for_url(f"{live_server.url}/review/{image.pk}/")
    assert page.locator(".listing-title").inner_text() == "Replica pistol"
    assert page.evaluate("document.getElementById('item-image').naturalWidth") > 0
    assert ListingImage.objects.get(pk=image.pk).claimed_by.username == "maria"

    page.keyboard.press("c")
    page.wait_for_url(f"{live_server.url}/")
    assert "Confirm (prohibited): image" in page.content()

    image.refresh_from_db()
    assert image.status == ImageStatus.CONFIRMED
    assert image.listing.status == ListingStatus.TAKEN_DOWN
    assert Decision.objects.filter(image=image, moderator__username="maria").count() == 1

    page.goto(f"{live_server.url}/listings/{image.listing_id}/")
    assert page.locator("#listing-status").inner_text() == "Taken down"
    # The strict Content-Security-Policy blocked nothing the pages need.
    assert not [e for e in page.console_errors if "Content Security Policy" in e]


def test_open_item_page_renews_its_claim_and_leaving_releases_it(browser_page, live_server):
    page = browser_page
    settings_row = get_settings()
    # A short lease makes the page ping every five seconds (a third of the lease, at least five).
    settings_row.claim_lease_seconds = 15
    settings_row.save()
    make_moderator("tomas", password="review-desk-pass")
    image = make_flagged(0.9, title="Stun gun", with_file=True)

    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "tomas")
    page.fill("#id_password", "review-desk-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/review/{image.pk}/")
    first_expiry = ListingImage.objects.get(pk=image.pk).claim_expires_at

    renew_url = f"{live_server.url}/review/{image.pk}/renew/"
    with page.expect_response(lambda response: response.url == renew_url, timeout=15_000) as renewed:
        pass
    assert renewed.value.status == 200
    assert ListingImage.objects.get(pk=image.pk).claim_expires_at > first_expiry

    page.goto(f"{live_server.url}/listings/")
    for _ in range(50):
        if ListingImage.objects.get(pk=image.pk).claimed_by_id is None:
            break
        page.wait_for_timeout(100)
    assert ListingImage.objects.get(pk=image.pk).claimed_by_id is None


def test_an_admin_sees_the_whatif_plot_drawn_with_both_thresholds_marked(browser_page, live_server):
    from django.contrib.auth import get_user_model

    from moderation.models import ModelVersion

    page = browser_page
    get_user_model().objects.create_superuser("ada", password="settings-desk-pass")
    holdout = {"keys": [f"k{i}" for i in range(40)], "labels": ["weapon"] * 20 + ["ok"] * 20,
               "scores": [0.9] * 20 + [0.1] * 20, "weights": [1.0] * 40}  # fmt: skip
    ModelVersion.objects.create(version="v0001", labels=["ok", "weapon"], prohibited_labels=["weapon"],
                                is_active=True, holdout_scores=holdout)  # fmt: skip
    settings_row = get_settings()
    settings_row.thresholds, settings_row.auto_thresholds = {"weapon": 0.5}, {"weapon": 0.95}
    settings_row.save()

    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", "settings-desk-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/training/settings/")
    plot = page.locator("svg.whatif")
    box = plot.bounding_box()
    assert box is not None and box["width"] >= 600 and box["height"] >= 380
    # The browser laid the curves out: the holdout's precision line spans most of the axis.
    assert page.locator("svg.whatif polyline.curve").count() >= 3
    line = page.locator("svg.whatif polyline.curve").first.bounding_box()
    assert line["width"] > 400
    assert page.locator("svg.whatif line.mark.review").count() == 2
    assert page.locator("svg.whatif line.mark.auto-action").count() == 2
    assert "to the queue" in page.locator("table.whatif-today").inner_text()
    # The only resource the page lacks is the site's favicon (a 404 every page of the desk logs).
    assert [error for error in page.console_errors if "404" not in error] == []
