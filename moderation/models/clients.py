"""API clients: the marketplaces (or their country sites) that send listings, their keys, and idempotency records.

A client owns its listings: `external_id` is unique per client, and every API read is scoped to the caller's
client, so one marketplace never sees another's listings. Keys are stored hashed (djangorestframework-api-key's
prefix + SHA-512 scheme), shown once when made, named, revocable and optionally expiring; each key acts as a user
account of the desk, which is what `submitted_by` records.
"""

from django.conf import settings
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

#: The client of listings uploaded by hand on the desk's upload page rather than through the API.
DESK_CLIENT_NAME = "desk"


class ClientManager(models.Manager):
    """Clients, plus the built-in one that owns listings moderators upload by hand."""

    def desk(self) -> "Client":
        """The client of the desk's own upload page, created on first use."""
        client, _ = self.get_or_create(name=DESK_CLIENT_NAME, defaults={"description": "Uploads made on the desk."})
        return client


class Client(models.Model):
    """A marketplace or one of its sites: it owns API keys, listings, webhook endpoints and its event feed."""

    name = models.SlugField(max_length=100, unique=True, help_text="Short unique name, e.g. acme-de.")
    description = models.CharField(max_length=300, blank=True)
    is_active = models.BooleanField(default=True, help_text="An inactive client's keys are refused.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ClientManager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ClientKeyManager(APIKeyManager):
    """Keys looked up with their client and user in the same query: every API request authenticates this way."""

    def get_usable_keys(self):
        """Keys not revoked (expiry is checked after the lookup), with their client and user."""
        return super().get_usable_keys().select_related("client", "user")


class ClientKey(AbstractAPIKey):
    """One API key of a client, acting as a desk user account (the `submitted_by` of what it sends)."""

    objects = ClientKeyManager()

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="keys")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "client API key"
        verbose_name_plural = "client API keys"


class IdempotencyRecord(models.Model):
    """What a request sent with an `Idempotency-Key` header did, so a retry of it gets the same answer.

    `fingerprint` is a digest of the request (method, path, form fields and each file's sha256): the same key with
    another request is refused (409) rather than silently answered with the first request's result.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64)
    listing = models.ForeignKey("Listing", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    appeal = models.ForeignKey("Appeal", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "key"], name="one_record_per_idempotency_key")]

    def __str__(self):
        return f"{self.client_id}:{self.key}"
