"""API clients and their keys: create a client, issue a key (shown once), revoke one.

A key is only ever shown when it is made: the database keeps its prefix and a SHA-512 hash, so a leaked database
does not leak working keys. Revoking is final. Each key acts as a desk user, which is what `submitted_by` records
for what it sends.
"""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction

from moderation.models import Client, ClientKey


class ClientError(ValueError):
    """A client or key change that cannot be made as asked; the message says why."""


def get_or_create_client(*, name: str, description: str = "") -> tuple[Client, bool]:
    """The client called `name`, created (active) when it does not exist yet."""
    if not name or not name.strip():
        raise ClientError("A client needs a name.")
    return Client.objects.get_or_create(name=name.strip(), defaults={"description": description})


def issue_key(*, client: Client, user, name: str, expires_at: datetime | None = None) -> tuple[ClientKey, str]:
    """A new key of `client` acting as `user`; returns the row and the key itself, which is never stored."""
    if not client.is_active:
        raise ClientError(f"Client {client.name} is inactive; activate it before issuing keys.")
    return ClientKey.objects.create_key(client=client, user=user, name=name[:50] or "key", expiry_date=expires_at)


def revoke_key(*, key_id: str) -> ClientKey:
    """Revoke a key for good; requests with it are refused from now on (idempotent)."""
    with transaction.atomic():
        key = ClientKey.objects.select_for_update().get(pk=key_id)
        if not key.revoked:
            key.revoked = True
            key.save(update_fields=["revoked"])
    return key


def revoke_keys_of(*, client: Client, user) -> int:
    """Revoke every live key `user` holds for `client` (what `create_api_token --rotate` does first)."""
    return ClientKey.objects.filter(client=client, user=user, revoked=False).update(revoked=True)


def api_user(username: str):
    """The desk account a key acts as, created without a usable password (it signs in with keys only)."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
