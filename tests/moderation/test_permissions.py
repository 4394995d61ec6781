"""Who may reach what: every URL the resolver knows, for anonymous, plain user, moderator and admin; CSRF on.

The matrix is checked against the resolver, not the other way round: a new URL name without an entry below
fails `test_every_url_name_has_an_entry`, so nobody ships a page without deciding who may see it. Entries for
names that do not exist (yet) are allowed.
"""

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse

from moderation import permissions
from moderation.models import (
    Decision,
    DeliveryAttempt,
    Event,
    IdempotencyRecord,
    ImageMatch,
    ImageStatus,
    Listing,
    ModelVersion,
    Score,
    TrainingRun,
    TrainingRunStatus,
    TrainingTrigger,
)
from moderation.selectors.settings import get_settings
from moderation.services import appeals, banks, review
from moderation.services.webhooks.endpoints import add_endpoint, send_test_event
from tests.support.factories import make_api_key, make_flagged

ROLES = ("anonymous", "user", "moderator", "admin")


@dataclass
class Case:
    """Expected status per role for one URL name, how to call it, and which objects fill its parameters."""

    expect: dict[str, int | tuple[int, ...] | Callable[[], int]]
    method: str = "get"
    kwargs: Callable[[dict], dict] = field(default=lambda objects: {})
    data: dict = field(default_factory=dict)


def roles(anonymous, user, moderator, admin_):
    return {"anonymous": anonymous, "user": user, "moderator": moderator, "admin": admin_}


def moderator_page(ok=200, admin_ok=None, **options):
    """Signed-out visitors go to the login page; users without a role get 403; moderators and admins get in."""
    return Case(expect=roles(302, 403, ok, ok if admin_ok is None else admin_ok), **options)


def admin_page(ok=200, **options):
    return Case(expect=roles(302, 403, 403, ok), **options)


def image_pk(objects):
    return {"pk": objects["image"].pk}


MATRIX: dict[str, Case] = {
    # Review desk (moderation/urls_review.py)
    "queue": moderator_page(),
    "login": Case(expect=roles(200, 302, 302, 302)),
    "logout": Case(expect=roles(302, 302, 302, 302), method="post"),
    "review-next": moderator_page(302, method="post"),
    "review-item": moderator_page(kwargs=image_pk),
    # Nobody holds a claim on the matrix's image, so a decision is a stale claim (409), never a write.
    "review-decide": moderator_page(409, method="post", kwargs=image_pk, data={"outcome": "confirm"}),
    # The keep-alive ping takes a free item (back): nobody holds this one.
    "review-renew": moderator_page(200, method="post", kwargs=image_pk),
    "review-release": moderator_page(302, method="post", kwargs=image_pk),
    # The decision was made by the moderator role: only they may undo it.
    "decision-undo": moderator_page(302, admin_ok=409, method="post", kwargs=lambda o: {"pk": o["decision"].pk}),
    # The QA queue; the matrix's decision is a moderator's, not a sampled automated takedown: 409, nothing written.
    "qa-queue": moderator_page(),
    "qa-verdict": moderator_page(
        409, method="post", kwargs=lambda o: {"pk": o["decision"].pk}, data={"outcome": "reject"}
    ),
    "image-file": moderator_page(kwargs=image_pk),
    "upload": moderator_page(),
    "listings": moderator_page(),
    "listing-detail": moderator_page(kwargs=lambda o: {"pk": o["listing"].pk}),
    # Appeals (moderation/urls_appeals.py). The matrix's appeal contests the moderator role's confirmation: they see
    # it but may not decide it (403); the admin may (302 back to the queue).
    "appeals": moderator_page(),
    "appeal-detail": moderator_page(kwargs=lambda o: {"pk": o["appeal"].pk}),
    "appeal-decide": Case(
        expect=roles(302, 403, 403, 302),
        method="post",
        kwargs=lambda o: {"pk": o["appeal"].pk},
        data={"outcome": "uphold", "note": "The photo shows it."},
    ),
    "moderator-record": admin_page(),
    # Needs attention (moderation/urls_attention.py): the matrix's failed image is retried or sent to review, each
    # request in its own rolled-back savepoint, so every role finds it failed.
    "needs-attention": moderator_page(),
    "attention-retry": moderator_page(302, method="post", kwargs=lambda o: {"pk": o["failed"].pk}),
    "attention-send-to-review": moderator_page(302, method="post", kwargs=lambda o: {"pk": o["failed"].pk}),
    # Learning loop pages (moderation/urls_training.py): settings, training and models are admin-only.
    "training-runs": admin_page(),
    "retrain-now": admin_page(302, method="post"),
    "training-run-detail": admin_page(kwargs=lambda o: {"pk": o["run"].pk}),
    "training-run-status": admin_page(kwargs=lambda o: {"pk": o["run"].pk}),
    "model-versions": admin_page(),
    "model-version-detail": admin_page(kwargs=lambda o: {"version": o["version"].version}),
    # That version has no files in the registry: refusing it is fine (302 with a message, 404, 409), a 500 is not.
    "model-version-activate": admin_page(
        (302, 404, 409), method="post", kwargs=lambda o: {"version": o["version"].version}
    ),
    # The matrix's version has no files in the registry, so an admin gets 404 for them.
    "model-version-file": admin_page(404, kwargs=lambda o: {"version": o["version"].version, "name": "curves.png"}),
    "moderation-settings": admin_page(),
    # Webhook pages (moderation/urls_webhooks.py): admins only; every action redirects back to the endpoint.
    "webhooks": admin_page(),
    "webhook-add": admin_page(),
    "webhook-endpoint": admin_page(kwargs=lambda o: {"pk": o["endpoint"].pk}),
    "webhook-rotate": admin_page(302, method="post", kwargs=lambda o: {"pk": o["endpoint"].pk}),
    "webhook-disable": admin_page(302, method="post", kwargs=lambda o: {"pk": o["endpoint"].pk}),
    "webhook-enable": admin_page(302, method="post", kwargs=lambda o: {"pk": o["endpoint"].pk}),
    "webhook-test": admin_page(302, method="post", kwargs=lambda o: {"pk": o["endpoint"].pk}),
    "webhook-replay": admin_page(302, method="post", kwargs=lambda o: {"pk": o["delivery"].pk}),
    # REST API (moderation/urls_api.py): any authenticated account (the marketplace's API user is a plain user);
    # an empty POST is a 400, never a 500. Health, schema and docs are public; health is 503 while no worker runs.
    "api-listings": Case(expect=roles(401, 400, 400, 400), method="post"),
    "api-listing-detail": Case(expect=roles(401, 200, 200, 200), kwargs=lambda o: {"listing_id": o["listing"].pk}),
    # Clients (moderation/urls_clients.py): admins; keys are for superusers, which the matrix's admin is not.
    "clients": admin_page(),
    "client-detail": admin_page(kwargs=lambda o: {"pk": o["client"].pk}),
    "client-toggle": admin_page(302, method="post", kwargs=lambda o: {"pk": o["client"].pk}),
    "client-key-create": Case(
        expect=roles(302, 403, 403, 403), method="post", kwargs=lambda o: {"pk": o["client"].pk}, data={"name": "k"}
    ),
    "client-key-revoke": Case(
        expect=roles(302, 403, 403, 403), method="post", kwargs=lambda o: {"pk": o["client"].pk, "prefix": "abc"}
    ),
    "api-listing-images": Case(
        expect=roles(401, 400, 400, 400), method="post", kwargs=lambda o: {"listing_id": o["listing"].pk}
    ),
    # The matrix's listing is in review, not taken down, but an empty body is refused before that matters.
    "api-listing-appeals": Case(
        expect=roles(401, 400, 400, 400), method="post", kwargs=lambda o: {"listing_id": o["listing"].pk}
    ),
    "api-events": Case(expect=roles(401, 200, 200, 200)),
    "api-score": Case(expect=roles(401, 400, 400, 400), method="post"),
    "api-health": Case(expect=roles(*[(200, 503)] * 4)),
    "api-health-ready": Case(expect=roles(*[(200, 503)] * 4)),
    "api-health-live": Case(expect=roles(200, 200, 200, 200)),
    "api-schema": Case(expect=roles(200, 200, 200, 200)),
    "api-docs": Case(expect=roles(200, 200, 200, 200)),
    "api-not-found": Case(expect=roles(404, 404, 404, 404)),
    # Django admin, site-level views. Non-staff are sent to the admin's own login page.
    "admin:index": Case(expect=roles(302, 302, 302, 200)),
    "admin:login": Case(expect=roles(200, 200, 200, 302)),
    "admin:logout": Case(expect=roles(302, 302, 302, 302), method="post"),
    "admin:password_change": Case(expect=roles(302, 302, 302, 200)),
    "admin:password_change_done": Case(expect=roles(302, 302, 302, 200)),
    "admin:autocomplete": Case(expect=roles(302, 302, 302, 403)),
    "admin:jsi18n": Case(expect=roles(302, 302, 302, 200)),
    "admin:app_list": Case(expect=roles(302, 302, 302, 200), kwargs=lambda o: {"app_label": "moderation"}),
    "admin:view_on_site": Case(
        expect=roles(302, 302, 302, 404),
        kwargs=lambda o: {
            "content_type_id": ContentType.objects.get_for_model(Listing).pk,
            "object_id": o["listing"].pk,
        },
    ),
    "admin:auth_user_password_change": Case(expect=roles(302, 302, 302, 403), kwargs=lambda o: {"id": o["user"].pk}),
    # Confirming the password before a sensitive change: any signed-in user.
    "reauth": Case(expect=roles(302, 200, 200, 200)),
    # The audit trail and its exports (moderation/urls_audit.py): admins.
    "audit": admin_page(),
    "audit-export": admin_page(),
    "decisions-export": admin_page(),
    # Hash banks (moderation/urls_banks.py): admins. An empty import is a 400 listing what is missing; removing an
    # entry without a reason says so and goes back to the bank (302).
    "banks": admin_page(),
    "bank-detail": admin_page(kwargs=lambda o: {"pk": o["bank"].pk}),
    "bank-import": admin_page(400, method="post", kwargs=lambda o: {"pk": o["bank"].pk}),
    "bank-export": admin_page(kwargs=lambda o: {"pk": o["bank"].pk}),
    "bank-entry-remove": admin_page(
        302, method="post", kwargs=lambda o: {"pk": o["bank"].pk, "entry_pk": o["entry"].pk}
    ),
}

# Rows only services create (pipeline state) have no "add" in the admin; the settings row is never deleted.
ADMIN_NO_ADD = {
    "moderation_hashbank",
    "moderation_bankentry",
    "moderation_imagematch",
    "moderation_bankstate",
    "moderation_appeal",
    "moderation_auditentry",
    "moderation_listingimage",
    "moderation_score",
    "moderation_decision",
    "moderation_trainingrun",
    "moderation_trainingstate",
    "moderation_modelversion",
    "moderation_moderationsettings",
    "moderation_trainingexample",
    # History, and keys: superusers only (the matrix's admin is a staff member of the admins group).
    "moderation_event",
    "moderation_idempotencyrecord",
    "moderation_outboxmessage",
    "moderation_clientkey",
    # Webhook rows are history or belong to the desk's webhook pages: read-only in the admin.
    "moderation_webhookendpoint",
    "moderation_webhooksecret",
    "moderation_webhookdelivery",
    "moderation_deliveryattempt",
}
ADMIN_NO_DELETE = {
    "moderation_hashbank",
    "moderation_bankentry",
    "moderation_imagematch",
    "moderation_bankstate",
    "moderation_moderationsettings",
    "moderation_auditentry",
    "moderation_listing",
    "moderation_listingimage",
    "moderation_score",
    "moderation_decision",
    "moderation_trainingexample",
    "moderation_trainingrun",
    "moderation_modelversion",
    "moderation_appeal",
    "moderation_client",
    "moderation_event",
    "moderation_idempotencyrecord",
    "moderation_outboxmessage",
    "moderation_clientkey",
    "moderation_webhookendpoint",
    "moderation_webhooksecret",
    "moderation_webhookdelivery",
    "moderation_deliveryattempt",
}
# Users, groups, keys and login lockouts are for superusers only: an admin who could edit users could make anyone
# a superuser, a key is a credential acting as an account, and unlocking an account is a security decision.
SUPERUSER_ONLY = {
    "auth_user",
    "auth_group",
    "moderation_clientkey",
    "axes_accessattempt",
    "axes_accesslog",
    "axes_accessfailurelog",
}
ADMIN_MODEL_VIEW = re.compile(r"^admin:(?P<model>\w+?)_(?P<view>changelist|add|change|delete|history)$")


def admin_model_case(name: str) -> Case | None:
    """Entries for the admin's per-model views, derived from the registry so every registered model is covered."""
    match = ADMIN_MODEL_VIEW.match(name)
    if not match:
        return None
    registered = {f"{m._meta.app_label}_{m._meta.model_name}": m for m in admin.site._registry}
    model = registered.get(match["model"])
    if model is None:
        return None
    view = match["view"]
    if match["model"] in SUPERUSER_ONLY:
        # The matrix's admin is not a superuser; permissions are checked before a row is looked up, except by the
        # history view, which sends staff back to the index for a missing row first.
        def account_status(model=model, view=view):
            return 302 if view == "history" and not model._default_manager.exists() else 403

        def account_kwargs(objects, model=model, view=view):
            if view in ("changelist", "add"):
                return {}
            row = model._default_manager.order_by("pk").first()
            return {"object_id": row.pk if row else 0}

        return Case(expect=roles(302, 302, 302, account_status), kwargs=account_kwargs)
    if view == "changelist":
        return Case(expect=roles(302, 302, 302, 200))
    if view == "add":
        return Case(expect=roles(302, 302, 302, 403 if match["model"] in ADMIN_NO_ADD else 200))

    def object_kwargs(objects, model=model):
        row = model._default_manager.order_by("pk").first()
        return {"object_id": row.pk if row else 0}

    # A missing row sends staff back to the admin index with a message (302).
    def admin_status(model=model):
        if not model._default_manager.exists():
            return 302
        if view == "delete" and match["model"] in ADMIN_NO_DELETE:
            return 403
        return 200

    return Case(expect=roles(302, 302, 302, admin_status), kwargs=object_kwargs)


def url_names(resolver=None, namespace=""):
    """Every (name, route) the resolver serves, namespaces included."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from url_names(pattern, inner)
        else:
            yield (f"{namespace}{pattern.name}" if pattern.name else None), namespace, str(pattern.pattern)


def case_for(name: str) -> Case | None:
    return MATRIX.get(name) or admin_model_case(name)


def test_every_url_name_has_an_entry():
    missing, unnamed = [], []
    for name, namespace, route in url_names():
        if name is None:
            # The admin's catch-all and its "object id without /change/" redirect are unnamed by design.
            if namespace != "admin:":
                unnamed.append(route)
            continue
        if case_for(name) is None:
            missing.append(name)
    assert not unnamed, f"Give these URL patterns a name and a permission matrix entry: {unnamed}"
    assert not missing, f"Add these URL names to MATRIX in {__file__}: {missing}"


@pytest.fixture
def matrix_objects(db, frozen_clock, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    moderators, admins = permissions.ensure_groups()
    users = get_user_model().objects
    plain = users.create_user("plain", password="x-pass-1")
    moderator = users.create_user("moderator", password="x-pass-2")
    moderator.groups.add(moderators)
    boss = users.create_user("boss", password="x-pass-3", is_staff=True)
    boss.groups.add(moderators, admins)
    get_settings()
    decided = make_flagged(0.9, with_file=True)
    review.claim_next(user=moderator)
    decision = review.decide(user=moderator, image_id=decided.pk, outcome="confirm")
    appeal = appeals.file_appeal(listing_id=decided.listing_id, client=decided.listing.client, text="Mine.").appeal
    image = make_flagged(0.8, with_file=True)
    failed = make_flagged(None, with_file=True, status=ImageStatus.FAILED, attempts=3, last_error="cannot decode")
    Score.objects.create(image=image, model_version="v0001", probabilities={"x": 0.8}, prohibited_probability=0.8)
    run = TrainingRun.objects.create(status=TrainingRunStatus.SUCCEEDED, trigger=TrainingTrigger.MANUAL)
    version = ModelVersion.objects.create(version="v0001", labels=["bag", "knife"], prohibited_labels=["knife"])
    # One row of each kind the admin lists, so its change pages are checked on a real row.
    make_api_key(plain)
    Event.objects.create(type="test", client=image.listing.client, occurred_at=image.created_at)
    IdempotencyRecord.objects.create(client=image.listing.client, key="k", fingerprint="f", listing=image.listing)
    endpoint, _secret = add_endpoint(client=image.listing.client, url="https://hooks.example.com/vigia")
    delivered = send_test_event(endpoint_id=endpoint.pk)
    DeliveryAttempt.objects.create(delivery=delivered, attempted_at=delivered.created_at, status_code=204)
    bank = banks.create_bank(user=boss, name="Shared")
    banks.import_hashes(bank_id=bank.pk, text="f" * 64, user=boss)
    ImageMatch.objects.create(image=image, entry=bank.entries.get(), bank=bank, distance=3, action="review")
    return {
        "bank": bank,
        "entry": bank.entries.get(),
        "run": run,
        "version": version,
        "users": {"anonymous": None, "user": plain, "moderator": moderator, "admin": boss},
        "user": plain,
        "image": image,
        "listing": image.listing,
        "decision": decision,
        "client": image.listing.client,
        "appeal": appeal,
        "failed": failed,
        "endpoint": endpoint,
        "delivery": delivered,
    }


class Rollback(Exception):
    pass


def signed_in_clients(users: dict) -> dict:
    """One client per role, signed in once; requests restore its cookies so a logout cannot leak into the next."""
    clients = {}
    for role, user in users.items():
        # A crashing view shows up as a 500 in the failure list instead of stopping the whole matrix.
        client = Client(raise_request_exception=False)
        if user is not None:
            client.force_login(user)
        clients[role] = (client, copy.deepcopy(client.cookies))
    return clients


def request_as(client_and_cookies, case: Case, url: str) -> int:
    """One request in a savepoint that is rolled back, so no call changes what the next one sees."""
    client, cookies = client_and_cookies
    client.cookies = copy.deepcopy(cookies)
    status = None
    try:
        with transaction.atomic():
            status = getattr(client, case.method)(url, case.data).status_code
            raise Rollback
    except Rollback:
        pass
    return status


@pytest.mark.django_db
def test_permission_matrix(matrix_objects):
    failures, checked = [], 0
    clients = signed_in_clients(matrix_objects["users"])
    for name, _namespace, _route in url_names():
        if name is None:
            continue
        case = case_for(name)
        url = reverse(name, kwargs=case.kwargs(matrix_objects))
        for role in ROLES:
            expected = case.expect[role]
            expected = expected() if callable(expected) else expected
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = request_as(clients[role], case, url)
            checked += 1
            if got not in expected:
                failures.append(f"{case.method.upper()} {url} ({name}) as {role}: expected {expected}, got {got}")
    assert checked > 100
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_decision_from_the_matrix_stays_undone_only_inside_its_savepoint(matrix_objects):
    """The undo in the matrix ran in a rolled-back savepoint: the decision is still live afterwards."""
    assert Decision.objects.get(pk=matrix_objects["decision"].pk).undone_at is None


@pytest.mark.django_db
def test_csrf_is_enforced_on_review_forms(matrix_objects):
    moderator = matrix_objects["users"]["moderator"]
    image = matrix_objects["image"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(moderator)
    assert client.post(reverse("review-next")).status_code == 403
    assert client.post(reverse("review-decide", args=[image.pk]), {"outcome": "confirm"}).status_code == 403
    assert client.post(reverse("logout")).status_code == 403
    page = client.get(reverse("queue")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(reverse("review-next"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == reverse("review-item", args=[image.pk])
    item_page = client.get(response["Location"]).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', item_page).group(1)
    decided = client.post(
        reverse("review-decide", args=[image.pk]), {"outcome": "confirm", "csrfmiddlewaretoken": token}
    )
    assert decided.status_code == 302
    assert Decision.objects.filter(image=image, undone_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_csrf_is_enforced_on_the_login_form():
    client = Client(enforce_csrf_checks=True)
    assert client.post(reverse("login"), {"username": "a", "password": "b"}).status_code == 403
