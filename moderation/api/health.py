"""Health for load balancers and operators: live, ready, and the full report.

Anyone may ask whether the desk is up, so the probes are anonymous, never throttled and cheap. An anonymous
caller gets one status word: the details (exception text, host names, process ids, the backlog) help an attacker
as much as an operator, so they go only to staff signed in on the desk and to marketplaces calling with their
key. A bad or expired key makes a probe anonymous rather than a 401: a load balancer configured with an old key
must not take the desk out of rotation.
"""

from drf_spectacular.utils import extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation.api import serializers
from moderation.api.authentication import ClientKeyAuthentication
from moderation.models import ClientKey
from moderation.selectors.health import check_health, check_readiness

PROBE_TIMEOUT_SECONDS = 1.0


def may_see_details(request) -> bool:
    """Whether the caller is staff signed in on the desk or a client calling with a valid key."""
    return request.user.is_authenticated and (request.user.is_staff or isinstance(request.auth, ClientKey))


class Probe(APIView):
    """Anonymous, unthrottled: probes come often and from few addresses."""

    def get_authenticators(self):
        """A valid client key or a desk session; a bad key makes the caller anonymous, never a 401."""
        return [ClientKeyAuthentication(lenient=True), SessionAuthentication()]

    permission_classes = [AllowAny]
    throttle_classes = []


class LiveView(Probe):
    """The process answers: no dependency is asked, so a database outage never gets web processes restarted."""

    @extend_schema(operation_id="health_live", responses={200: serializers.StatusSerializer})
    def get(self, request):
        """Answer 200 `{"status": "ok"}` whenever the process can answer at all."""
        return Response({"status": "ok"})


class ReadyView(Probe):
    """Can the desk take listings and score them: database, Redis, scoring workers, active model; 200 or 503."""

    @extend_schema(
        operation_id="health_ready",
        responses={200: serializers.ReadinessSerializer, 503: serializers.ReadinessSerializer},
    )
    def get(self, request):
        """Answer 200 when every check passes, 503 otherwise; the checks themselves only to staff and clients."""
        health = check_readiness(timeout=PROBE_TIMEOUT_SECONDS)
        body = health.as_dict() if may_see_details(request) else {"status": health.status}
        return Response(body, status=200 if health.ok else 503)


class HealthView(Probe):
    """The readiness checks with the backlog, what each scoring process serves and the webhook endpoints."""

    @extend_schema(
        operation_id="health", responses={200: serializers.HealthSerializer, 503: serializers.HealthSerializer}
    )
    def get(self, request):
        """Answer like `/ready`, with the operators' full report for staff and clients."""
        health = check_health(timeout=PROBE_TIMEOUT_SECONDS)
        body = health.as_dict() if may_see_details(request) else {"status": health.status}
        return Response(body, status=200 if health.ok else 503)
