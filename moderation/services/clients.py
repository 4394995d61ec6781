"""API clients and their keys: create a client, issue a key (shown once), revoke one.

A key is only ever shown when it is made: the database keeps its prefix and a SHA-512 hash, so a leaked database
does not leak working keys. Revoking is final. Each key acts as a desk user, which is what `submitted_by` records
for what it sends.
"""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction

from moderation.models import AuditAction, Client, ClientKey
from moderation.services import audit


class ClientError(ValueError):
    """A client or key change that cannot be made as asked; the message says why."""


def get_or_create_client(*, name: str, description: str = "") -> tuple[Client, bool]:
    """The client called `name`, created (active) when it does not exist yet."""
    if not name or not name.strip():
        raise ClientError("A client needs a name.")
    client, created = Client.objects.get_or_create(name=name.strip(), defaults={"description": description})
    if created:
        audit.record(action=AuditAction.CLIENT_CREATED, obj=client, after={"name": client.name})
    return client, created


def set_client_active(*, client_id: int, active: bool) -> Client:
    """Activate or deactivate a client: an inactive client's keys are refused with 401."""
    with transaction.atomic():
        client = Client.objects.select_for_update().get(pk=client_id)
        if client.is_active != active:
            before = client.is_active
            client.is_active = active
            client.save(update_fields=["is_active"])
            audit.record(
                action=AuditAction.CLIENT_CHANGED, obj=client, before={"is_active": before}, after={"is_active": active}
            )
    return client


def issue_key(*, client: Client, user, name: str, expires_at: datetime | None = None) -> tuple[ClientKey, str]:
    """A new key of `client` acting as `user`; returns the row and the key itself, which is never stored."""
    if not client.is_active:
        raise ClientError(f"Client {client.name} is inactive; activate it before issuing keys.")
    with transaction.atomic():
        key, secret = ClientKey.objects.create_key(
            client=client, user=user, name=name[:50] or "key", expiry_date=expires_at
        )
        audit.record(
            action=AuditAction.KEY_ISSUED,
            obj=key,
            object_id=key.prefix,
            after={"client": client.name, "name": key.name, "acts_as": user.get_username(), "expires": expires_at},
        )
    return key, secret


def revoke_key(*, key_id: str) -> ClientKey:
    """Revoke a key for good; requests with it are refused from now on (idempotent)."""
    with transaction.atomic():
        key = ClientKey.objects.select_for_update().get(pk=key_id)
        if not key.revoked:
            key.revoked = True
            key.save(update_fields=["revoked"])
            audit.record(action=AuditAction.KEY_REVOKED, obj=key, object_id=key.prefix, after={"revoked": True})
    return key


def revoke_keys_of(*, client: Client, user) -> int:
    """Revoke every live key `user` holds for `client` (what `create_api_token --rotate` does first)."""
    keys = list(ClientKey.objects.filter(client=client, user=user, revoked=False).values_list("pk", flat=True))
    for key_id in keys:
        revoke_key(key_id=key_id)
    return len(keys)


def api_user(username: str):
    """The desk account a key acts as, created without a usable password (it signs in with keys only)."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
