"""Request rates per client: one marketplace cannot fill every web worker, and scoring one photo (a forward pass)
has a much lower rate of its own. Over the rate the API answers JSON 429 with `Retry-After`.

Counts live in the shared cache (Redis, `CACHES`), so every web worker and machine counts together. Should the
cache be unreachable, requests are let through rather than refused: a Redis outage must not take the API down.
"""

import logging

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from moderation.models import ClientKey

logger = logging.getLogger(__name__)


class ClientRateThrottle(SimpleRateThrottle):
    """`VIGIA_API_RATE` per client (all its keys together), per desk user for sessions, per address for others."""

    scope = "client"

    def get_rate(self):
        """The scope's rate as configured now (DRF copies the rates once at import; settings may change)."""
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view):
        """Whom the request counts against: its client, its signed-in user, or (anonymous) its address."""
        if isinstance(request.auth, ClientKey):
            ident = f"client-{request.auth.client_id}"
        elif getattr(request.user, "is_authenticated", False):
            ident = f"user-{request.user.pk}"
        else:
            self.scope = "anonymous"
            self.rate = self.get_rate()
            self.num_requests, self.duration = self.parse_rate(self.rate)
            ident = f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view):
        """Count the request; let it through when the cache cannot be reached."""
        try:
            return super().allow_request(request, view)
        except Exception as error:  # the cache (Redis) is down: serve rather than refuse
            logger.warning("rate limit not applied, the cache is unreachable: %s", error)
            return True


class ScoreRateThrottle(ClientRateThrottle):
    """`VIGIA_SCORE_RATE`: the much lower rate of `POST /api/v1/score`, on top of the client's general rate."""

    scope = "score"
