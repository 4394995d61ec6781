"""The audit trail: written by the services with their change (actor, time, object, before and after, request id
and address), append-only in the ORM, the admin and (on PostgreSQL) the table itself; filtered and exported as CSV,
with decisions exported as DSA statements of reasons."""

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.test import Client as BrowserClient
from django.urls import reverse

from moderation.models import AuditAction, AuditEntry, ModelVersion, TrainingExample, TrainingTrigger
from moderation.permissions import ensure_groups
from moderation.services import review
from moderation.services.examples import deactivate_example
from moderation.services.settings import update_settings
from moderation.services.training.trigger import request_training
from tests.support.factories import make_flagged, make_moderator, mirror_active_labels

pytestmark = pytest.mark.django_db


def entries(action: str):
    return list(AuditEntry.objects.filter(action=action))


@pytest.fixture
def boss(db):
    _, admins = ensure_groups()
    user = get_user_model().objects.create_user("boss", password="pw-for-tests-only", is_staff=True)
    user.groups.add(admins)
    return user


def signed_in(user, recent: bool = True) -> BrowserClient:
    """A browser signed in as `user`, now (`recent`) or two hours ago."""
    import time

    browser = BrowserClient()
    browser.force_login(user)
    session = browser.session
    session["vigia_auth_time"] = time.time() - (0 if recent else 7200)
    session.save()
    return browser


def test_decisions_and_undos_are_audited_with_the_moderator(published):
    mirror_active_labels()
    moderator = make_moderator()
    image = make_flagged(label="bad")
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=image.pk, outcome="confirm", note="a knife")
    made = entries(AuditAction.DECISION_MADE)[0]
    assert (made.actor, made.actor_name, made.object_type, made.object_id) == (
        moderator,
        moderator.username,
        "decision",
        str(decision.pk),
    )
    assert made.after["outcome"] == "confirm" and made.note == "a knife"
    review.undo_decision(user=moderator, decision_id=decision.pk)
    assert entries(AuditAction.DECISION_UNDONE)[0].before == {"outcome": "confirm"}


def test_a_rolled_back_change_leaves_no_entry(published):
    moderator = make_moderator()
    image = make_flagged()
    review.claim_next(user=moderator)
    with pytest.raises(RuntimeError), transaction.atomic():
        review.decide(user=moderator, image_id=image.pk, outcome="reject")
        raise RuntimeError("the request fails after the decision")
    assert not AuditEntry.objects.exists()


def test_settings_changes_record_only_what_changed_before_and_after_from_the_page(boss, published):
    browser = signed_in(boss)
    form = {
        "precision_target": 0.99,
        "recall_target": 0.95,
        "qa_rate": 0.05,
        "default_threshold": 0.7,
        "retrain_batch_size": 100,
        "claim_lease_seconds": 120,
        "max_scoring_attempts": 3,
        "audit_rate": 0.02,
        "audit_sampling": "by_score",
        "holdout_share": 0.2,
        "gate_metric": "recall",
        "gate_precision_margin": 0.02,
        "gate_tolerance": 2.0,
        "gate_min_holdout_per_label": 10,
        "appeal_window_days": 183,
        "retrain_on_schedule": "on",
    }
    response = browser.post(reverse("moderation-settings"), form, REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 302, response.content
    entry = entries(AuditAction.SETTINGS_CHANGED)[0]
    assert entry.before == {"default_threshold": 0.5} and entry.after == {"default_threshold": 0.7}
    assert (entry.actor, entry.ip) == (boss, "203.0.113.7") and len(entry.request_id) == 32
    assert response["X-Request-ID"] == entry.request_id
    update_settings(values={"thresholds": {"weapon": 0.4}})
    assert entries(AuditAction.SETTINGS_CHANGED)[0].after == {"thresholds": {"weapon": 0.4}}


def test_a_stale_sign_in_confirms_the_password_before_a_settings_change(boss, published):
    browser = signed_in(boss, recent=False)
    response = browser.post(
        reverse("moderation-settings"), {"default_threshold": 0.9}, HTTP_REFERER="/training/settings/"
    )
    assert response.status_code == 302 and response["Location"].startswith(reverse("reauth"))
    assert not AuditEntry.objects.filter(action=AuditAction.SETTINGS_CHANGED).exists()
    wrong = browser.post(reverse("reauth"), {"password": "nope", "next": "/training/settings/"})
    assert wrong.status_code == 400
    assert entries(AuditAction.LOGIN_FAILED)[0].object_id == "boss"
    right = browser.post(reverse("reauth"), {"password": "pw-for-tests-only", "next": "https://evil.example/"})
    assert right.status_code == 302 and right["Location"] == "/"  # never off-site


def test_activation_rollback_and_retrain_requests_are_audited(tmp_path, settings, published, rescores):
    from tests.support.workers import train_tiny_version

    settings.VIGIA_MODEL_REGISTRY = tmp_path / "models"
    first = train_tiny_version(settings.VIGIA_MODEL_REGISTRY, tmp_path / "cache")
    second = train_tiny_version(settings.VIGIA_MODEL_REGISTRY, tmp_path / "cache", activate=False)
    from moderation.services.model_versions import activate_version, sync_models

    sync_models()
    activate_version(version=second)
    activate_version(version=first)
    activated, rolled_back = entries(AuditAction.MODEL_ACTIVATED), entries(AuditAction.MODEL_ROLLED_BACK)
    assert [(e.before, e.after) for e in activated] == [({"active": first}, {"active": second})]
    assert [(e.before, e.after) for e in rolled_back] == [({"active": second}, {"active": first})]
    assert activated[0].actor_name == "system"
    assert ModelVersion.objects.get(is_active=True).version == first
    boss = get_user_model().objects.create_user("boss")
    run = request_training(trigger=TrainingTrigger.MANUAL, user=boss, dispatch=False)
    requested = entries(AuditAction.TRAINING_REQUESTED)[0]
    assert (requested.actor, requested.object_id, requested.after) == (boss, str(run.pk), {"trigger": "manual"})


def test_examples_are_deactivated_with_a_reason_never_relabelled(published):
    example = TrainingExample.objects.create(sha256="a" * 64, path="x.png", label="bad", source="initial")
    with pytest.raises(ValueError):
        deactivate_example(example_id=example.pk, reason=" ")
    deactivate_example(example_id=example.pk, reason="a photo of a screen, not of the item")
    entry = entries(AuditAction.EXAMPLE_DEACTIVATED)[0]
    assert entry.before["label"] == "bad" and entry.after == {"active": False} and "screen" in entry.note
    assert not TrainingExample.objects.get(pk=example.pk).active


def test_the_trail_refuses_updates_and_deletes_through_the_orm():
    entry = AuditEntry.objects.create(at="2026-12-01T00:00:00Z", action=AuditAction.LOGIN_FAILED)
    entry.note = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(note="rewritten")
    with pytest.raises(PermissionError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get().note == ""


@pytest.mark.postgres
def test_on_postgresql_the_table_itself_refuses_update_and_delete():
    if connection.vendor != "postgresql":
        pytest.skip("the trigger is PostgreSQL's (set DATABASE_URL=postgres://...)")
    AuditEntry.objects.create(at="2026-12-01T00:00:00Z", action=AuditAction.LOGIN_FAILED)
    for statement in ("UPDATE moderation_auditentry SET note = 'x'", "DELETE FROM moderation_auditentry"):
        with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as c:
            c.execute(statement)
        assert "append-only" in str(refused.value)
    assert AuditEntry.objects.count() == 1


def test_failed_logins_are_audited_with_the_username_and_address(db):
    browser = BrowserClient()
    browser.post(reverse("login"), {"username": "mallory", "password": "guess"}, REMOTE_ADDR="198.51.100.9")
    entry = entries(AuditAction.LOGIN_FAILED)[0]
    assert (entry.actor, entry.actor_name, entry.object_id, entry.ip) == (None, "mallory", "mallory", "198.51.100.9")


def test_the_audit_page_filters_and_exports_csv_and_decisions_as_statements_of_reasons(boss, published):
    mirror_active_labels()
    moderator = make_moderator()
    image = make_flagged(label="bad", is_audit=True)
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=image.pk, outcome="confirm", policy_category="weapons")
    AuditEntry.objects.create(at="2026-01-01T00:00:00Z", action=AuditAction.LOGIN_FAILED, actor_name="old")
    browser = signed_in(boss)
    page = browser.get(reverse("audit"), {"action": AuditAction.DECISION_MADE})
    assert page.status_code == 200 and moderator.username in page.content.decode()
    assert "old" not in [entry.actor_name for entry in page.context["page"].object_list]
    export = browser.get(reverse("audit-export"), {"actor": moderator.username})
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [row["action"] for row in rows] == [AuditAction.DECISION_MADE] and rows[0]["object_id"] == str(decision.pk)
    statements = browser.get(reverse("decisions-export"))
    sor = list(csv.DictReader(io.StringIO(b"".join(statements.streaming_content).decode())))
    assert len(sor) == 1
    row = sor[0]
    assert (row["decision_id"], row["outcome"], row["policy_ground"]) == (str(decision.pk), "confirm", "weapons")
    assert (row["automated_detection"], row["automated_decision"]) == ("no", "no")  # an audit sample, a human
    assert float(row["seconds_from_upload_to_action"]) >= 0 and row["client"] == "desk"
