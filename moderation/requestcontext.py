"""Who is asking, and which request this is: read by the audit trail wherever a change is made.

The middleware stores the current request for the duration of its handling (a context variable, so threads and
async tasks never see each other's) and gives every request an id: the client's `X-Request-ID` when it sends a
sane one, else a new one, returned in the response either way so a support ticket can name it. Code that runs
outside a request (Celery tasks, commands) sees no request: its changes are the system's.
"""

import contextvars
import re
import uuid

from django.conf import settings

_request: contextvars.ContextVar = contextvars.ContextVar("vigia_request", default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def current_request():
    """The request being handled in this context, or None (a task, a command)."""
    return _request.get()


def request_user():
    """The signed-in user or API key's account of the current request, or None."""
    request = current_request()
    user = getattr(request, "user", None)
    return user if getattr(user, "is_authenticated", False) else None


def request_id() -> str:
    """The current request's id, or "" outside a request."""
    return getattr(current_request(), "vigia_request_id", "")


def client_ip(request) -> str | None:
    """The caller's address: REMOTE_ADDR, or the address `VIGIA_TRUSTED_PROXIES` proxies saw it come from."""
    if request is None:
        return None
    hops = settings.VIGIA_TRUSTED_PROXIES
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if hops and len(forwarded) >= hops:
        return forwarded[-hops]
    return request.META.get("REMOTE_ADDR") or None


class RequestContextMiddleware:
    """Make the request, its id and its caller's address available to the audit trail; echo `X-Request-ID`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        sent = request.headers.get("X-Request-ID", "")
        request.vigia_request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        token = _request.set(request)
        try:
            response = self.get_response(request)
        finally:
            _request.reset(token)
        response["X-Request-ID"] = request.vigia_request_id
        return response
