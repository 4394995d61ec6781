"""The API's one error shape, `{"error": code, "detail": text}` (plus fields an error names, such as the existing
listing's `listing_id` on a 409), for every error: Django's own (unknown paths, oversized bodies, too many files)
and DRF's included, so clients never have to parse an HTML error page."""

import logging

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from moderation.api import serializers
from moderation.services.ingest import StorageFull, StorageUnavailable
from moderation.validation import ImageValidationError

logger = logging.getLogger(__name__)

try:
    from django.core.exceptions import TooManyFilesSent
except ImportError:  # pragma: no cover - Django < 3.2.18 has no such limit
    TooManyFilesSent = ()


#: What a 507 or 503 for the media storage tells the client to wait before it sends the request again.
STORAGE_RETRY_AFTER_S = 60
#: What a 503 for an unavailable database tells the client to wait (a restart takes seconds).
DATABASE_RETRY_AFTER_S = 5


class ApiError(exceptions.APIException):
    """An error with its own code and status, e.g. 409 `duplicate_external_id` or 503 `no_active_model`.

    `extra` fields go into the body beside `error` and `detail`, e.g. the `listing_id` a conflict is about.
    """

    def __init__(
        self, code: str, detail: str, status_code: int = status.HTTP_400_BAD_REQUEST, extra: dict | None = None
    ):
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code
        self.extra = extra or {}


def error_response(
    code: str, detail: str, status_code: int, headers: dict | None = None, extra: dict | None = None
) -> Response:
    """Build the API's one error shape, `{"error": code, "detail": text}`, with its status and headers."""
    return Response({"error": code, "detail": detail, **(extra or {})}, status=status_code, headers=headers)


def _flatten(detail, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{prefix}{name}: " if name else prefix)
        return out
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}{detail}"]


def exception_handler(exc, context):
    """DRF's exception hook: every error becomes `{"error", "detail"}` with a 4xx status, never HTML."""
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, ImageValidationError):
        exc = ApiError(exc.code, exc.detail, exc.status)

    # Nothing was stored; a client that retries later (the same request is safe to repeat) loses nothing.
    if isinstance(exc, StorageFull):
        return error_response("storage_full", str(exc), 507, {"Retry-After": str(STORAGE_RETRY_AFTER_S)})
    if isinstance(exc, StorageUnavailable):
        return error_response("storage_unavailable", str(exc), 503, {"Retry-After": str(STORAGE_RETRY_AFTER_S)})
    # The database went away (a restart, a failover): nothing was done, and the same request will work once it is
    # back (every write is all or nothing, creates are safe to repeat), so the client is told to retry.
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable: %s", exc)
        return error_response(
            "database_unavailable",
            "The database is unavailable; nothing was done. Try again shortly.",
            503,
            {"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )
    if isinstance(exc, RequestDataTooBig):
        return error_response("too_large", "The request body is larger than the server accepts.", 413)
    if TooManyFilesSent and isinstance(exc, TooManyFilesSent):
        return error_response("too_many_files", "Too many files in one request.", 400)
    if isinstance(exc, SuspiciousOperation):
        return error_response("bad_request", "The request was malformed.", 400)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        code = getattr(exc, "error_code", None) or exc.default_code
        extra = getattr(exc, "extra", None)
        return error_response(code, "; ".join(_flatten(exc.detail)), exc.status_code, headers, extra)
    logger.exception("unhandled API error", exc_info=exc)
    return error_response("server_error", "Something went wrong on our side; it has been logged.", 500)


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Unknown paths under /api/ answer JSON, not Django's HTML 404 page (nor its HTML CSRF page for a POST)."""
    return JsonResponse({"error": "not_found", "detail": f"No API endpoint at {request.path}."}, status=404)


ERRORS = {
    400: OpenApiResponse(serializers.ErrorSerializer, description="Invalid request or image"),
    401: OpenApiResponse(serializers.ErrorSerializer, description="Missing or bad token"),
    413: OpenApiResponse(serializers.ErrorSerializer, description="Image or request too large"),
}
#: What an upload may also answer: the media storage full (507) or failing (503); nothing was stored.
STORAGE_ERRORS = {
    503: OpenApiResponse(serializers.ErrorSerializer, description="Media storage failing; nothing was stored"),
    507: OpenApiResponse(serializers.ErrorSerializer, description="Media storage full; nothing was stored"),
}
