"""Who is calling: a client's API key (`Authorization: Token <key>`, or `Api-Key` / `Bearer`), or a desk session.

A key authenticates as the desk user it acts as and carries its client, which scopes everything the request may
read or write. A signed-in desk user (a moderator's browser session) acts for the desk's own client, the one that
owns listings uploaded by hand. Keys are looked up by their prefix and checked against their SHA-512 hash; a
revoked, expired or inactive client's key is refused with 401.
"""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from moderation.models import Client, ClientKey

KEYWORDS = ("token", "api-key", "bearer")
#: `last_used_at` is written at most this often per key: once a minute tells an admin enough.
TOUCH_INTERVAL = timedelta(minutes=1)


class ClientKeyAuthentication(authentication.BaseAuthentication):
    """DRF authentication by client API key; `request.auth` is the `ClientKey`.

    A `lenient` instance treats a bad key like no key: the health probes answer a caller with a stale key as
    anonymous rather than with a 401 that would take the desk out of a load balancer.
    """

    def __init__(self, *, lenient: bool = False):
        self.lenient = lenient

    def authenticate(self, request):
        """Return `(user, key)` for a valid key, None when no key was sent, or raise 401 for a bad one."""
        try:
            return self._authenticate(request)
        except exceptions.AuthenticationFailed:
            if self.lenient:
                return None
            raise

    def _authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].decode(errors="replace").lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send the key as `Authorization: Token <key>`.")
        raw = parts[1].decode(errors="replace")
        try:
            key = ClientKey.objects.get_from_key(raw)
        except ClientKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.") from None
        if key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if not key.client.is_active:
            raise exceptions.AuthenticationFailed(f"Client {key.client.name} is disabled.")
        if not key.user.is_active:
            raise exceptions.AuthenticationFailed("The account of this API key is disabled.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
            ClientKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key.user, key

    def authenticate_header(self, request) -> str:
        """What a 401 names in `WWW-Authenticate`, so clients know to send a key."""
        return 'Token realm="api"'


class ClientKeyScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema documents the key: an `Authorization` header holding `Token <key>`."""

    target_class = ClientKeyAuthentication
    name = "clientKey"

    def get_security_definition(self, auto_schema):
        """The schema's security scheme for client keys."""
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` with a key from `manage.py create_api_token` or the desk's Clients page.",
        }


def client_of(request) -> Client:
    """The client a request acts for: its key's, or the desk's own for a signed-in desk user."""
    if isinstance(request.auth, ClientKey):
        return request.auth.client
    return Client.objects.desk()
