"""The API fuzzed from its own OpenAPI schema (schemathesis): whatever a client generated from the schema sends, the
server never answers 5xx and every answer matches the schema. A bounded number of examples per operation keeps it
to seconds; the generated requests run in-process against the WSGI app, with a real client key."""

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from moderation.models import ModelVersion
from tests.support.factories import make_api_key

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

#: What the fuzz run checks: no 5xx, and status codes, content types, headers and bodies as the schema says.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def keep_the_test_connection():
    """Requests run through the bare WSGI handler, whose start and end close the database connection (Django's
    test client disconnects that for its requests); here it would close the test's transaction, so it is
    disconnected too."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def api_schema(
    keep_the_test_connection, calls_in_process, db, media_root, published, settings, monkeypatch, fake_scorer
):
    """The schema as the app serves it, with a healthy desk behind it: a 503 then means something broke."""
    from moderation import worker
    from moderation.selectors import health

    monkeypatch.setattr(health, "check_workers", lambda timeout: {"ok": True, "count": 1, "names": ["w@host"]})
    monkeypatch.setattr(worker, "get_scorer", lambda: fake_scorer)
    settings.VIGIA_MODEL_REGISTRY = media_root.parent / "models"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    ModelVersion.objects.create(version="v0001", labels=["ok", "bad"], prohibited_labels=["bad"], is_active=True)
    return schemathesis.openapi.from_wsgi("/api/schema?format=json", WSGIHandler())


@pytest.fixture
def auth_header(db):
    return {"Authorization": f"Token {make_api_key(get_user_model().objects.create_user('fuzz-api'))}"}


def test_no_request_the_schema_allows_breaks_the_server_or_the_schema(api_schema, auth_header):
    """Every operation of the schema, a bounded number of generated requests each."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case):
            case.call_and_validate(headers=auth_header, checks=CHECKS)

        check()
