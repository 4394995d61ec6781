"""The settings page's what-if plot, recalibration and QA figures (admins only), and the QA queue (moderators)."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from moderation import clock
from moderation.models import Decision, DecisionOutcome, ImageStatus, ListingImage, ModelVersion
from moderation.selectors.settings import get_settings
from moderation.selectors.whatif import whatif
from moderation.services.calibration import recalibrate
from moderation.services.routing import record_score
from tests.support.factories import make_image, make_moderator, make_user
from tests.support.images import ALLOWED, PROHIBITED

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loop_settings")]


@pytest.fixture
def desk():
    """An active model whose holdout supports both thresholds, a week of scores, and one QA item."""
    n_bad, n_ok = 600, 600
    holdout = {
        "keys": [f"k{i}" for i in range(n_bad + n_ok)],
        "labels": [PROHIBITED] * n_bad + [ALLOWED] * n_ok,
        "scores": [0.97] * 500 + [0.6] * 100 + [0.05] * n_ok,
        "weights": [1.0] * (n_bad + n_ok),
    }
    ModelVersion.objects.create(
        version="v0001", labels=[PROHIBITED, ALLOWED], prohibited_labels=[PROHIBITED], is_active=True,
        holdout_scores=holdout,
    )  # fmt: skip
    recalibrate(version="v0001", reason="test")
    row = get_settings()
    assert (row.thresholds, row.auto_thresholds) == ({PROHIBITED: 0.6}, {PROHIBITED: 0.6})
    row.thresholds, row.auto_thresholds, row.qa_rate, row.audit_rate = {PROHIBITED: 0.5}, {PROHIBITED: 0.95}, 1.0, 0
    row.save()
    now = clock.now()
    for score, count in ((0.7, 14), (0.97, 7), (0.1, 21)):
        for _ in range(count):
            image = make_image()
            ListingImage.objects.filter(pk=image.pk).update(prohibited_probability=score, scored_at=now)
    image = make_image(status=ImageStatus.PENDING)
    record_score(image=image, model_version="v0001", probabilities={PROHIBITED: 0.99, ALLOWED: 0.01},
                 prohibited=[PROHIBITED], settings_row=get_settings(), rng=lambda: 0.5)  # fmt: skip
    return {"qa": Decision.objects.get(image=image)}


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_the_whatif_curves_count_the_last_week_per_day_and_read_the_holdout(desk):
    curves = whatif(version=ModelVersion.objects.get(), label=PROHIBITED, settings_row=get_settings())
    # 14 images at 0.7 (plus the auto-actioned one at 0.99 and 7 at 0.97 above 0.95) over 7 days.
    assert curves["today"]["queue_per_day"] == pytest.approx(14 / 7)
    assert curves["today"]["auto_per_day"] == pytest.approx(8 / 7)
    assert curves["holdout_recall"][50] == pytest.approx(1.0) and curves["holdout_recall"][95] == pytest.approx(5 / 6)
    assert curves["holdout_precision"][0] == pytest.approx(0.5) and curves["holdout_precision"][60] == 1.0


def test_the_settings_page_shows_the_plot_to_admins_and_refuses_moderators(desk):
    admin = signed_in(make_user("boss", is_superuser=True, is_staff=True))
    html = admin.get(reverse("moderation-settings")).content.decode()
    svg = re.search(r'<svg class="whatif".*?</svg>', html, re.S).group(0)
    # Holdout precision and recall, queue and auto-actions per day; no decision curves: the one decision is an
    # auto-action nobody has checked yet, which measures nothing.
    assert svg.count("<polyline") == 4 and 'class="curve decisions precision"' not in svg
    assert 'class="mark review"' in svg and 'class="mark auto-action"' in svg
    assert "holdout precision" in svg and "queue per day" in svg
    today = re.search(r'<table class="compact whatif-today".*?</table>', html, re.S).group(0)
    assert "2.0 to the queue" in today and "1.1 taken down" in today
    recalibration = re.search(r'<table class="compact recalibration".*?</table>', html, re.S).group(0)
    assert "0.6000" in recalibration  # the derived thresholds, before the admin's hand-set ones
    assert 'class="compact auto-precision"' in html and "no verdicts yet" in html
    assert signed_in(make_moderator()).get(reverse("moderation-settings")).status_code == 403


def test_a_moderator_overturns_a_qa_item_from_the_queue_page(desk):
    moderator = signed_in(make_moderator())
    page = moderator.get(reverse("qa-queue")).content.decode()
    assert f'data-decision="{desk["qa"].pk}"' in page
    response = moderator.post(reverse("qa-verdict", args=[desk["qa"].pk]), {"outcome": DecisionOutcome.REJECT})
    assert response.status_code == 302
    assert Decision.objects.get(pk=desk["qa"].pk).qa_outcome == DecisionOutcome.REJECT
    assert moderator.post(reverse("qa-verdict", args=[desk["qa"].pk]), {"outcome": "reject"}).status_code == 409
    assert f'data-decision="{desk["qa"].pk}"' not in moderator.get(reverse("qa-queue")).content.decode()
    admin = signed_in(make_user("boss", is_superuser=True, is_staff=True))
    html = admin.get(reverse("moderation-settings")).content.decode()
    row = re.search(r'<table class="compact auto-precision".*?</table>', html, re.S).group(0)
    assert "<td>0.000</td>" in row  # one verdict, overturned


def test_the_preview_leaves_unchecked_auto_actions_out_and_weighs_qa_verdicts_by_the_qa_rate(desk):
    from moderation.selectors.training import threshold_preview
    from moderation.services import auto_action

    row = get_settings()
    row.qa_rate = 0.25
    row.save()
    assert threshold_preview(0.9)["decisions"] == 0  # the QA item is the model's word only, not yet checked
    Decision.objects.filter(pk=desk["qa"].pk).update(qa_probability=0.25)
    auto_action.qa_verdict(user=make_moderator(), decision_id=desk["qa"].pk, outcome=DecisionOutcome.REJECT)
    preview = threshold_preview(0.9)
    # The overturn is the one measured decision: a rejection at 0.99 standing for 4 takedowns.
    assert preview["decisions"] == 1 and preview["precision"] == 0.0
    from moderation.selectors.training import decision_weight

    weights = list(
        Decision.objects.filter(undone_at__isnull=True).annotate(w=decision_weight(0.02)).values_list("w", flat=True)
    )
    assert weights == [pytest.approx(4.0)]


def test_a_versions_page_shows_the_thresholds_derived_for_it(desk):
    admin = signed_in(make_user("boss", is_superuser=True, is_staff=True))
    response = admin.get(reverse("model-version-detail", args=["v0001"]))
    assert response.status_code == 200
    table = re.search(r'<table class="compact version-thresholds".*?</table>', response.content.decode(), re.S)
    assert "<td>0.6000</td><td>0.6000</td>" in table.group(0)
    assert "1200 holdout examples" in response.content.decode()
    assert "training examples each scored by a model that never trained on it" not in response.content.decode()
    ModelVersion.objects.filter(version="v0001").update(
        training_scores={"keys": ["a", "b", "c"], "labels": [], "scores": [], "weights": [], "sources": []}
    )
    page = admin.get(reverse("model-version-detail", args=["v0001"])).content.decode()
    assert "also on its 3 training examples each scored by a model that never trained on it" in page


def test_todays_numbers_are_counted_at_the_exact_thresholds_not_the_grid(desk):
    row = get_settings()
    row.auto_thresholds = {PROHIBITED: 0.975}  # between the grid's 0.97 and 0.98
    row.save()
    today = whatif(version=ModelVersion.objects.get(), label=PROHIBITED, settings_row=row)["today"]
    # 14 at 0.7 and 7 at 0.97 wait for review; the one at 0.99 was taken down.
    assert today["queue_per_day"] == pytest.approx(21 / 7) and today["auto_per_day"] == pytest.approx(1 / 7)
    assert today["holdout_precision_auto"] is None  # no holdout example scores 0.975 or more
    assert today["holdout_recall_review"] == pytest.approx(1.0)
