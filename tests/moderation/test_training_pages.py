"""Training pages: who may see them, what they show, and that each action calls its service (CSRF enforced)."""

import json
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from moderation import clock, permissions
from moderation.models import (
    DecisionOutcome,
    ModelVersion,
    TrainingRun,
    TrainingRunStatus,
    TrainingState,
    TrainingTrigger,
)
from moderation.selectors.settings import get_settings
from moderation.services import model_versions
from moderation.services.training.trigger import record_decision
from tests.support.factories import make_decision, make_image, make_user
from tests.support.images import ALLOWED, PROHIBITED

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loop_settings")]


class FakeRegistry:
    """The registry calls the pages make, with the plots on disk, so no model has to be trained here."""

    def __init__(self, root: Path):
        self.root = root
        self.active = None
        for version in ("v0001", "v0002"):
            (root / version).mkdir(parents=True, exist_ok=True)
            (root / version / "curves.png").write_bytes(b"\x89PNG curves " + version.encode())
            (root / version / "confusion.png").write_bytes(b"\x89PNG confusion " + version.encode())

    def path(self, version):
        return self.root / version

    def versions(self):
        return []

    def activate(self, version):
        self.active = version


@pytest.fixture
def registry(tmp_path, monkeypatch):
    fake = FakeRegistry(tmp_path / "registry")
    monkeypatch.setattr(model_versions, "get_registry", lambda: fake)
    monkeypatch.setattr(model_versions, "_rescore_open_images", lambda: None)
    return fake


@pytest.fixture
def objects(registry):
    run = TrainingRun.objects.create(
        trigger=TrainingTrigger.BATCH,
        status=TrainingRunStatus.SUCCEEDED,
        model_version="v0002",
        gate={"reason": "Recall 0.800 -> 0.900: promoted.", "candidate": {"recall": 0.9}, "active": {"recall": 0.8}},
        metrics={"accuracy": 0.93, "precision": 0.9, "recall": 0.9, "f1": 0.9, "auc": 0.97, "n": 100},
    )
    ModelVersion.objects.create(version="v0001", labels=[ALLOWED, PROHIBITED], prohibited_labels=[PROHIBITED])
    ModelVersion.objects.create(
        version="v0002",
        labels=[ALLOWED, PROHIBITED],
        prohibited_labels=[PROHIBITED],
        is_active=True,
        activated_at=clock.now(),
        training_run=run,
    )
    return {"run": run}


_clients: dict = {}


def clients():
    """One signed-in client per role (created once per test)."""
    from django.contrib.auth import get_user_model

    if get_user_model().objects.filter(username="boss").exists() and _clients:
        return _clients
    permissions.ensure_groups()
    moderator = make_user("moderator")
    moderator.groups.add(permissions.ensure_groups()[0])
    result = {"anonymous": Client(), "user": Client(), "moderator": Client(), "admin": Client()}
    result["user"].force_login(make_user("plain"))
    result["moderator"].force_login(moderator)
    result["admin"].force_login(make_user("boss", is_superuser=True, is_staff=True))
    _clients.clear()
    _clients.update(result)
    return result


PAGES = [
    ("training-runs", {}),
    ("training-run-detail", {"pk": "run"}),
    ("training-run-status", {"pk": "run"}),
    ("model-versions", {}),
    ("model-version-detail", {"version": "v0002"}),
    ("model-version-file", {"version": "v0002", "name": "curves.png"}),
    ("moderation-settings", {}),
]
ACTIONS = [
    ("retrain-now", {}),
    ("model-version-activate", {"version": "v0001"}),
]


def url_for(name, kwargs, objects):
    return reverse(name, kwargs={k: (objects["run"].pk if v == "run" else v) for k, v in kwargs.items()})


@pytest.mark.parametrize(("name", "kwargs"), PAGES + ACTIONS)
def test_every_training_page_is_for_admins_only(name, kwargs, objects, published):
    url = url_for(name, kwargs, objects)
    method = "post" if (name, kwargs) in ACTIONS else "get"
    by_role = clients()
    anonymous = getattr(by_role["anonymous"], method)(url)
    assert anonymous.status_code == 302 and reverse("login") in anonymous["Location"]
    assert getattr(by_role["user"], method)(url).status_code == 403
    assert getattr(by_role["moderator"], method)(url).status_code == 403
    assert getattr(by_role["admin"], method)(url).status_code == (302 if method == "post" else 200)


def test_runs_page_shows_progress_and_how_many_confirmations_remain(objects):
    settings_row = get_settings()
    settings_row.retrain_batch_size = 10
    settings_row.save()
    TrainingState.objects.create(pk=1, confirmed_since_last_run=7)
    running = TrainingRun.objects.create(
        trigger=TrainingTrigger.MANUAL,
        status=TrainingRunStatus.RUNNING,
        phase="embedding",
        progress_current=40,
        progress_total=200,
    )
    page = clients()["admin"].get(reverse("training-runs"))
    html = page.content.decode()
    assert '<dd id="remaining">3</dd>' in html
    assert reverse("training-run-status", args=[running.pk]) in html
    assert 'value="40"' in html and "embedding 40/200" in html
    assert "training.js" in html


def test_status_endpoint_reports_live_progress_as_json(objects):
    run = TrainingRun.objects.create(
        trigger=TrainingTrigger.MANUAL,
        status=TrainingRunStatus.RUNNING,
        phase="training",
        progress_current=3,
        progress_total=12,
    )
    data = json.loads(clients()["admin"].get(reverse("training-run-status", args=[run.pk])).content)
    assert (data["status"], data["phase"], data["progress_current"], data["progress_total"]) == (
        "running",
        "training",
        3,
        12,
    )
    assert data["fraction"] == 0.25 and data["open"] is True


def test_retrain_now_queues_a_manual_run_requested_by_the_admin(objects, published):
    admin = clients()["admin"]
    response = admin.post(reverse("retrain-now"))
    assert response.status_code == 302
    run = TrainingRun.objects.get(status=TrainingRunStatus.QUEUED)
    assert run.trigger == TrainingTrigger.MANUAL and run.requested_by.username == "boss"


def test_activate_flips_the_active_version_and_the_registry_pointer(objects, registry):
    response = clients()["admin"].post(reverse("model-version-activate", args=["v0001"]))
    assert response.status_code == 302
    assert ModelVersion.objects.get(is_active=True).version == "v0001"
    assert registry.active == "v0001"
    versions = clients()["admin"].get(reverse("model-versions")).content.decode()
    assert "Roll back to v0002" in versions


def test_version_page_shows_metrics_gate_plots_and_the_decisions_that_trained_it(objects):
    moderator = make_user("mod")
    image = make_image(PROHIBITED)
    decision = make_decision(image, moderator, DecisionOutcome.CONFIRM, None)
    record_decision(decision=decision)
    from moderation.models import TrainingExample

    TrainingExample.objects.update(used_in_run=objects["run"], is_holdout=False)
    html = clients()["admin"].get(reverse("model-version-detail", args=["v0002"])).content.decode()
    assert "Decisions that trained it (1)" in html
    assert "Recall 0.800 -&gt; 0.900: promoted." in html
    assert reverse("model-version-file", args=["v0002", "curves.png"]) in html
    assert reverse("model-version-file", args=["v0002", "confusion.png"]) in html
    assert f"image {image.pk}" in html


def test_version_files_serve_only_the_plots(objects):
    admin = clients()["admin"]
    response = admin.get(reverse("model-version-file", args=["v0002", "confusion.png"]))
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == b"\x89PNG confusion v0002"
    assert admin.get(reverse("model-version-file", args=["v0002", "model.keras"])).status_code == 404
    assert admin.get(reverse("model-version-file", args=["v0009", "curves.png"])).status_code == 404


def test_settings_page_saves_thresholds_and_knobs(objects):
    admin = clients()["admin"]
    form = {
        "threshold__bad": "0.65",
        "auto__bad": "0.98",
        "precision_target": "0.99",
        "recall_target": "0.95",
        "qa_rate": "0.1",
        "default_threshold": "0.5",
        "retrain_batch_size": "25",
        "claim_lease_seconds": "90",
        "max_scoring_attempts": "3",
        "audit_rate": "0.05",
        "audit_sampling": "uniform",
        "holdout_share": "0.2",
        "gate_metric": "f1",
        "gate_precision_margin": "0.01",
        "gate_min_holdout_per_label": "5",
        "gate_tolerance": "1.5",
        "retrain_on_schedule": "",
        "appeal_window_days": "90",
    }
    assert admin.post(reverse("moderation-settings"), form).status_code == 302
    saved = get_settings()
    assert saved.thresholds == {"bad": 0.65} and saved.threshold_for("bad") == 0.65
    # Thresholds set by hand pin their label: recalibration after the next model keeps them.
    assert saved.auto_thresholds == {"bad": 0.98} and saved.pinned_labels == ["bad"] and saved.qa_rate == 0.1
    below = admin.post(reverse("moderation-settings"), {**form, "auto__bad": "0.5"})
    assert below.status_code == 200 and get_settings().auto_thresholds == {"bad": 0.98}
    assert (saved.retrain_batch_size, saved.audit_rate, saved.gate_metric) == (25, 0.05, "f1")
    assert (saved.gate_tolerance, saved.audit_sampling) == (1.5, "uniform")
    assert saved.retrain_on_schedule is False and saved.appeal_window_days == 90
    bad = admin.post(reverse("moderation-settings"), {**form, "audit_rate": "2"})
    assert bad.status_code == 200 and get_settings().audit_rate == 0.05
    unknown = admin.post(reverse("moderation-settings"), {**form, "audit_sampling": "by_mood"})
    assert unknown.status_code == 200 and get_settings().audit_sampling == "uniform"
    negative = admin.post(reverse("moderation-settings"), {**form, "gate_tolerance": "-1"})
    assert negative.status_code == 200 and get_settings().gate_tolerance == 1.5


def test_threshold_preview_estimates_queue_share_precision_and_recall(objects):
    moderator = make_user("mod")
    for probability, outcome in [(0.9, "confirm"), (0.7, "confirm"), (0.6, "reject"), (0.3, "confirm")]:
        image = make_image(PROHIBITED)
        image.prohibited_probability = probability
        image.save()
        make_decision(image, moderator, outcome, None)
    html = clients()["admin"].get(reverse("moderation-settings"), {"preview": "0.65"}).content.decode()
    assert "50% of 4" in html  # 2 of the 4 scored images are at or above 0.65
    assert "1.000" in html  # both decided images above it were confirmed
    assert "0.667" in html  # 2 of the 3 confirmed images are above it


def test_threshold_preview_counts_each_audit_decision_as_the_images_it_stands_for(objects):
    from moderation.selectors.training import threshold_preview

    moderator = make_user("mod")
    for probability, outcome, audit_probability in [
        (0.9, "confirm", None),
        (0.6, "reject", None),
        (0.3, "confirm", 0.25),  # an audit item drawn with probability 0.25: it stands for 4 such images
        (0.1, "reject", 0.05),
    ]:
        image = make_image(PROHIBITED)
        image.prohibited_probability = probability
        image.save(update_fields=["prohibited_probability"])
        decision = make_decision(image, moderator, outcome, None)
        decision.was_audit = audit_probability is not None
        decision.audit_probability = audit_probability
        decision.save(update_fields=["was_audit", "audit_probability"])
    preview = threshold_preview(0.5)
    assert preview["precision"] == pytest.approx(1 / 2)
    assert preview["recall"] == pytest.approx(1 / (1 + 4))
    # Below the audited images' scores, the missed violation and the allowed image count 4 and 20 times.
    assert threshold_preview(0.05)["precision"] == pytest.approx(5 / 26)


def test_actions_need_the_csrf_token(objects):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("boss2", is_superuser=True))
    assert client.post(reverse("retrain-now")).status_code == 403
    assert client.post(reverse("model-version-activate", args=["v0001"])).status_code == 403
    assert not TrainingRun.objects.filter(status=TrainingRunStatus.QUEUED).exists()
