"""Receivers of Django's auth signals: audit a failed login, and remember when a session signed in.

The sign-in time is what a sensitive action checks (`permissions.recent_login_required`): changing settings or
activating a model asks for the password again once the sign-in is older than `VIGIA_REAUTH_MINUTES`.
"""

import time

from moderation.models import AuditAction
from moderation.services import audit

AUTH_TIME_KEY = "vigia_auth_time"


def login_failed(sender, credentials, request=None, **kwargs):
    """Audit a failed login with the username tried (never the password) and the address it came from."""
    username = str(credentials.get("username", ""))[:150]
    audit.record(action=AuditAction.LOGIN_FAILED, object_type="user", object_id=username, actor_name=username)


def logged_in(sender, request, user, **kwargs):
    """Stamp the session with its sign-in time."""
    if request is not None and hasattr(request, "session"):
        request.session[AUTH_TIME_KEY] = time.time()
