"""The Clients pages: the marketplaces that send listings, and their API keys.

Admins see clients and create or deactivate them; issuing and revoking keys is for superusers only, because a key
is a credential that acts as a desk account. A new key is shown once, on the page that answers its creation, and
never again: only its hash is stored.
"""

from datetime import datetime, time

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from moderation.models import Client, ClientKey
from moderation.permissions import admin_required
from moderation.selectors.clients import client_keys, client_list
from moderation.selectors.webhooks import client_endpoints
from moderation.services.clients import (
    ClientError,
    api_user,
    get_or_create_client,
    issue_key,
    revoke_key,
    set_client_active,
)


class ClientForm(forms.Form):
    """A new client: a short unique name and what it is."""

    name = forms.SlugField(max_length=100, help_text="Short unique name, e.g. acme-de.")
    description = forms.CharField(max_length=300, required=False)

    def clean_name(self):
        """Refuse a name another client has."""
        name = self.cleaned_data["name"]
        if Client.objects.filter(name=name).exists():
            raise forms.ValidationError("A client with this name exists already.")
        return name


class KeyForm(forms.Form):
    """A new key: its name, the desk account it acts as, and an optional expiry date."""

    name = forms.CharField(max_length=50)
    account = forms.SlugField(max_length=150, help_text="The desk account it acts as; created if new (keys only).")
    expires_on = forms.DateField(required=False, help_text="Optional: the key stops working after this day.")

    def clean_account(self):
        """Refuse to let a key act as a staff account."""
        username = self.cleaned_data["account"]
        existing = get_user_model().objects.filter(username=username).first()
        if existing is not None and (existing.is_staff or existing.is_superuser):
            raise forms.ValidationError("A key may not act as a staff account; use a dedicated API account.")
        return username


def _detail_context(client: Client, form: KeyForm) -> dict:
    return {
        "client": client,
        "keys": client_keys(client),
        "endpoints": client_endpoints(client=client),
        "form": form,
        "now": timezone.now(),
    }


def _superuser_only(request) -> None:
    if not request.user.is_superuser:
        raise PermissionDenied("Only superusers manage API keys.")


@admin_required
@require_http_methods(["GET", "POST"])
def clients_view(request):
    """List the clients with their keys, listings and endpoints counted, and create a client."""
    form = ClientForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        client, _ = get_or_create_client(name=form.cleaned_data["name"], description=form.cleaned_data["description"])
        messages.success(request, f"Client {client.name} created.")
        return redirect("client-detail", pk=client.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "moderation/clients/list.html", {"clients": client_list(), "form": form}, status=status)


@admin_required
@require_GET
def client_detail_view(request, pk: int):
    """Show one client: its keys (superusers may issue and revoke them), its webhook endpoints and its state."""
    client = get_object_or_404(Client, pk=pk)
    return render(request, "moderation/clients/detail.html", _detail_context(client, KeyForm()))


@admin_required
@require_POST
def client_toggle_view(request, pk: int):
    """Activate or deactivate a client: an inactive client's keys are refused with 401."""
    client = get_object_or_404(Client, pk=pk)
    client = set_client_active(client_id=client.pk, active=not client.is_active)
    messages.success(request, f"Client {client.name} is now {'active' if client.is_active else 'inactive'}.")
    return redirect("client-detail", pk=client.pk)


@admin_required
@require_POST
def key_create_view(request, pk: int):
    """Issue a key for the client (superusers) and show it once on the answering page."""
    _superuser_only(request)
    client = get_object_or_404(Client, pk=pk)
    form = KeyForm(request.POST)
    if not form.is_valid():
        return render(request, "moderation/clients/detail.html", _detail_context(client, form), status=400)
    expires_on = form.cleaned_data["expires_on"]
    expires_at = (
        timezone.make_aware(datetime.combine(expires_on, time.max), timezone.get_current_timezone())
        if expires_on
        else None
    )
    try:
        key, secret = issue_key(
            client=client,
            user=api_user(form.cleaned_data["account"]),
            name=form.cleaned_data["name"],
            expires_at=expires_at,
        )
    except ClientError as error:
        messages.error(request, str(error))
        return redirect("client-detail", pk=client.pk)
    response = render(request, "moderation/clients/key_created.html", {"client": client, "key": key, "secret": secret})
    # The key is on this page only: never cached, by the browser or anything in between.
    response["Cache-Control"] = "no-store"
    return response


@admin_required
@require_POST
def key_revoke_view(request, pk: int, prefix: str):
    """Revoke a key (named by its public prefix) for good (superusers); requests with it are refused from now on."""
    _superuser_only(request)
    client = get_object_or_404(Client, pk=pk)
    key = get_object_or_404(ClientKey, prefix=prefix, client=client)
    revoke_key(key_id=key.pk)
    messages.success(request, f"Key {key.name} ({key.prefix}…) revoked.")
    return redirect("client-detail", pk=client.pk)
