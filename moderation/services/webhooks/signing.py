"""What a webhook request carries: the event as JSON and the Standard Webhooks headers that prove it came from us.

The body is the event in the feed's shape (`api.serializers.EventSerializer`), so a receiver parses webhooks and
the feed with the same code. The signature covers `webhook-id`, `webhook-timestamp` and the exact body bytes
(HMAC-SHA256, `v1,<base64>`), which lets a receiver reject a tampered body, a replay of an old request (the
timestamp) and a duplicate (the id, which is the event's and therefore the same on every attempt and replay).

During a secret rotation the request is signed once with each secret that has not expired yet, space-separated in
`webhook-signature`, so a receiver still holding the old secret keeps verifying until it switches.
"""

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q
from standardwebhooks import Webhook

from moderation.models import Event, WebhookSecret

SECRET_PREFIX = "whsec_"
#: Random bytes in a new secret (the spec asks for 24 to 64).
SECRET_BYTES = 32
USER_AGENT = "Vigia-Webhooks/1"


class NoSigningSecret(ValueError):
    """An endpoint has no secret that is still valid, so nothing can be signed for it."""


def new_secret() -> str:
    """A new signing secret, `whsec_` and the base64 of fresh random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secrets_of(*, endpoint_id: int, at: datetime) -> list[tuple[str, datetime | None]]:
    """The endpoint's secrets not expired at `at`, newest first, with their expiry (for `still_valid` later)."""
    rows = WebhookSecret.objects.filter(endpoint_id=endpoint_id).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=at)
    )
    return list(rows.order_by("-created_at", "-id").values_list("secret", "expires_at"))


def still_valid(secrets: Sequence[tuple[str, datetime | None]], at: datetime) -> list[str]:
    """Those of `secrets_of`'s secrets that have not expired by `at`."""
    return [secret for secret, expires_at in secrets if expires_at is None or expires_at > at]


def valid_secrets(*, endpoint_id: int, at: datetime) -> list[str]:
    """The endpoint's secrets that have not expired at `at`, newest first."""
    return still_valid(secrets_of(endpoint_id=endpoint_id, at=at), at)


def payloads(*, events: Sequence[Event]) -> list[bytes]:
    """The request bodies: each event as the feed shows it, compact JSON (load the client with the events)."""
    from moderation.api.serializers import EventSerializer

    rows = EventSerializer(list(events), many=True).data
    return [json.dumps(row, separators=(",", ":"), cls=DjangoJSONEncoder).encode() for row in rows]


def payload(*, event: Event) -> bytes:
    """The request body of one event (`payloads`)."""
    return payloads(events=[event])[0]


@lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def signature(*, secret: str, message_id: str, timestamp: datetime, body: bytes) -> str:
    """One `v1,<base64>` signature of the request, as `standardwebhooks` computes and verifies it."""
    return _signer(secret).sign(msg_id=message_id, timestamp=timestamp, data=body.decode())


def headers(*, message_id: str, body: bytes, secrets: Sequence[str], timestamp: datetime) -> dict[str, str]:
    """The request's headers: the three `webhook-*` ones, one signature per secret, content type and user agent."""
    if not secrets:
        raise NoSigningSecret("The endpoint has no valid signing secret; rotate its secret to make one.")
    signatures = [signature(secret=s, message_id=message_id, timestamp=timestamp, body=body) for s in secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
