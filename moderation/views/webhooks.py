"""Webhook pages for admins: each client's endpoints and their state, adding one, an endpoint's delivery log, and
the actions on it (rotate the secret, enable, disable, send a test event, replay a delivery).

A secret is shown once: the view that makes it keeps it for that admin only until the endpoint page has shown it,
and that page is never cached. Every change is a CSRF-protected POST that redirects back to the page it came from.
"""

from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from moderation.forms import WebhookEndpointForm
from moderation.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from moderation.permissions import admin_required
from moderation.selectors import webhooks as selectors
from moderation.services.webhooks import endpoints as services
from moderation.services.webhooks.dispatch import span

NEW_SECRET_SESSION_KEY = "webhook_new_secret"
DELIVERIES_PER_PAGE = 25


def _show_secret_once(request, endpoint_id: int, secret: str) -> None:
    request.session[NEW_SECRET_SESSION_KEY] = {"endpoint_id": endpoint_id, "secret": secret}


def _take_secret(request, endpoint_id: int) -> str | None:
    shown = request.session.get(NEW_SECRET_SESSION_KEY)
    if not shown or shown.get("endpoint_id") != endpoint_id:
        return None
    del request.session[NEW_SECRET_SESSION_KEY]
    return shown.get("secret")


@admin_required
@require_GET
def endpoints_view(request):
    """Show admins every client's webhook endpoints with their state (enabled, failing since, disabled and why)."""
    return render(request, "moderation/webhooks/endpoints.html", {"clients": selectors.endpoints_by_client()})


@admin_required
@require_http_methods(["GET", "POST"])
def add_endpoint_view(request):
    """Let an admin add an endpoint; its secret is shown once on the endpoint's page."""
    form = WebhookEndpointForm(request.POST or None, initial={"client": request.GET.get("client")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            endpoint, secret = services.add_endpoint(
                client=data["client"],
                url=data["url"],
                event_types=data["event_types"],
                description=data["description"],
            )
        except services.WebhookError as error:
            form.add_error(None, str(error))
        else:
            _show_secret_once(request, endpoint.pk, secret)
            messages.success(request, f"Endpoint {endpoint.pk} added for {endpoint.client.name}.")
            return redirect("webhook-endpoint", pk=endpoint.pk)
    return render(request, "moderation/webhooks/add.html", {"form": form})


@never_cache
@admin_required
@require_GET
def endpoint_view(request, pk: int):
    """Show an admin one endpoint: state, secrets (not their values), actions, and its delivery log, newest first."""
    try:
        endpoint = selectors.get_endpoint(endpoint_id=pk)
    except WebhookEndpoint.DoesNotExist as error:
        raise Http404("No such endpoint.") from error
    status = request.GET.get("status") or None
    if status not in DeliveryStatus.values:
        status = None
    counts = selectors.delivery_counts(endpoint_id=pk)
    page = Paginator(selectors.delivery_log(endpoint_id=pk, status=status), DELIVERIES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "moderation/webhooks/endpoint.html",
        {
            "endpoint": endpoint,
            "new_secret": _take_secret(request, pk),
            "secrets": selectors.secrets_of(endpoint_id=pk),
            "counts": [(label, counts[value]) for value, label in DeliveryStatus.choices],
            "statuses": DeliveryStatus.choices,
            "status": status,
            "page": page,
            "probe_every": span(settings.VIGIA_WEBHOOK_PROBE_SECONDS),
        },
    )


def _act(request, endpoint_id: int, action, done: str):
    """Run one service call for the endpoint, say how it went, and go back to the endpoint's page."""
    try:
        result = action()
    except services.WebhookError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, done.format(result=result))
    return redirect("webhook-endpoint", pk=endpoint_id)


def endpoint_action(done: str):
    """Make `action(request, endpoint)` a CSRF-protected POST view for admins on `/webhooks/<pk>/...`; `done` is
    the message shown afterwards, formatted with the action's result."""

    def decorate(action):
        @admin_required
        @require_POST
        @wraps(action)
        def view(request, pk: int):
            endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
            return _act(request, endpoint.pk, lambda: action(request, endpoint), done)

        return view

    return decorate


@endpoint_action("New secret made; the old one keeps signing for 24 hours.")
def rotate_secret_view(request, endpoint: WebhookEndpoint):
    """Let an admin rotate the secret: a new one, shown once; the old ones keep signing for 24 hours."""
    _show_secret_once(request, endpoint.pk, services.rotate_secret(endpoint_id=endpoint.pk))


@endpoint_action("Endpoint disabled; its pending deliveries are cancelled.")
def disable_view(request, endpoint: WebhookEndpoint):
    """Let an admin stop sending to an endpoint; what was pending for it is cancelled."""
    return services.disable_endpoint(endpoint_id=endpoint.pk, reason=f"Disabled by {request.user.get_username()}.")


@endpoint_action("Endpoint enabled; new events are sent to it again.")
def enable_view(request, endpoint: WebhookEndpoint):
    """Let an admin send to an endpoint again, with its failing state cleared."""
    return services.enable_endpoint(endpoint_id=endpoint.pk)


@endpoint_action("Test event queued as delivery {result.pk}.")
def send_test_view(request, endpoint: WebhookEndpoint):
    """Let an admin send a test event to this endpoint only."""
    return services.send_test_event(endpoint_id=endpoint.pk)


@admin_required
@require_POST
def replay_view(request, pk: int):
    """Let an admin send a delivery's event again (a new delivery with the same webhook-id)."""
    original = get_object_or_404(WebhookDelivery, pk=pk)
    done = f"Event {original.event_id} queued again as delivery {{result.pk}}."
    return _act(request, original.endpoint_id, lambda: services.replay(delivery_id=original.pk), done)
