"""Reads for the Clients pages: each client with its keys, listings and webhook endpoints counted."""

from django.db.models import Count, Q

from moderation.models import Client, ClientKey


def client_list():
    """Every client with its live keys, listings and webhook endpoints counted, by name."""
    return Client.objects.annotate(
        live_keys=Count("keys", filter=Q(keys__revoked=False), distinct=True),
        listing_count=Count("listings", distinct=True),
        endpoint_count=Count("webhook_endpoints", distinct=True),
    ).order_by("name")


def client_keys(client: Client):
    """A client's keys, newest first, with the account each acts as (the secret itself is never stored)."""
    return ClientKey.objects.filter(client=client).select_related("user").order_by("-created")
