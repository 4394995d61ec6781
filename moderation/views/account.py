"""Confirming the password before a sensitive change, when the sign-in is not recent.

`permissions.recent_login_required` sends an admin here before settings change or a model is activated if the
session signed in more than `VIGIA_REAUTH_MINUTES` ago. The password is checked through Django's `authenticate`,
so failures count against the login limits (django-axes) and are audited like failed sign-ins.
"""

import time

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from moderation.signals import AUTH_TIME_KEY


@login_required
@require_http_methods(["GET", "POST"])
def reauth_view(request):
    """Ask a signed-in user for their password again, then send them back where they came from."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = "/"
    error = ""
    if request.method == "POST":
        user = authenticate(request, username=request.user.get_username(), password=request.POST.get("password", ""))
        if user is not None and user.pk == request.user.pk:
            request.session[AUTH_TIME_KEY] = time.time()
            return redirect(target)
        error = "That is not your password."
    context = {"next": target, "error": error, "minutes": settings.VIGIA_REAUTH_MINUTES}
    return render(request, "registration/reauth.html", context, status=400 if error else 200)
