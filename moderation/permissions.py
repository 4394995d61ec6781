"""Roles. Moderators review the queue; admins also change settings, training and models.

Roles are Django groups so an operator can grant them in the admin without code. Staff users count as moderators
(a staff account can already reach the admin) and admins can do everything a moderator can.
"""

import time
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse

MODERATORS = "moderators"
ADMINS = "admins"

# The admins group may manage these apps' rows in the Django admin without being superusers: never `auth` (an admin
# who could edit users could make anyone a superuser) and never keys (a key is a credential acting as an account).
ADMIN_APP_LABELS = ("moderation", "django_celery_beat")
SUPERUSER_ONLY_MODELS = ("clientkey",)


def _in_group(user, name: str) -> bool:
    # Cached per request object so a page that checks roles many times queries the groups once.
    cache = getattr(user, "_vigia_groups", None)
    if cache is None:
        cache = set(user.groups.values_list("name", flat=True))
        user._vigia_groups = cache
    return name in cache


def is_admin(user) -> bool:
    """Superusers and members of the "admins" group."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.is_superuser or _in_group(user, ADMINS)


def is_moderator(user) -> bool:
    """Members of the "moderators" group, staff, and admins."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.is_staff or _in_group(user, MODERATORS) or is_admin(user)


def ensure_groups() -> tuple[Group, Group]:
    """Create both role groups (idempotent) and give admins the model permissions the Django admin needs."""
    moderators, _ = Group.objects.get_or_create(name=MODERATORS)
    admins, _ = Group.objects.get_or_create(name=ADMINS)
    granted = Permission.objects.filter(content_type__app_label__in=ADMIN_APP_LABELS).exclude(
        content_type__model__in=SUPERUSER_ONLY_MODELS
    )
    admins.permissions.set(granted)
    return moderators, admins


def _role_required(check):
    """Anonymous users go to the login page; signed-in users without the role get 403, not a login loop."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not check(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


moderator_required = _role_required(is_moderator)
admin_required = _role_required(is_admin)


def signed_in_recently(request) -> bool:
    """Whether this session signed in (or confirmed its password) within `VIGIA_REAUTH_MINUTES`."""
    from moderation.signals import AUTH_TIME_KEY

    stamped = request.session.get(AUTH_TIME_KEY)
    return stamped is not None and time.time() - float(stamped) <= settings.VIGIA_REAUTH_MINUTES * 60


def recent_login_required(view):
    """For sensitive changes (settings, model activation): a sign-in older than N minutes confirms the password.

    The change is not made; the admin is sent to confirm the password and then back to the page, where they submit
    it again, so a session left open on a shared screen cannot change thresholds or promote a model.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method == "POST" and not signed_in_recently(request):
            back = request.META.get("HTTP_REFERER") or request.get_full_path()
            return redirect(f"{reverse('reauth')}?{urlencode({'next': back})}")
        return view(request, *args, **kwargs)

    return wrapper
