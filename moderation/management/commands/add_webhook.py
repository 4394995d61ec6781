"""`manage.py add_webhook CLIENT URL [--events TYPE ...] [--description TEXT]`: register a webhook endpoint.

The client must exist (`create_api_token USER --client NAME` makes one): registering a URL for a misspelt client
must fail, not create it. The URL is checked as the desk's form checks it (https and, for an IP literal, a public
address, unless the settings allow otherwise). The signing secret is printed alone on the last line, for scripts
(`tail -1`); it is shown only this once.
"""

from django.core.management.base import BaseCommand, CommandError

from moderation.models import Client
from moderation.services.webhooks.endpoints import SUBSCRIBABLE, WebhookError, add_endpoint


class Command(BaseCommand):
    """`manage.py add_webhook`: add an endpoint for a client and print its secret on the last line."""

    help = "Register a webhook endpoint for a client and print its signing secret alone on the last line."

    def add_arguments(self, parser):
        """The client's name, the URL, the event types (none: every type) and a description."""
        parser.add_argument("client", help="Name of an existing client.")
        parser.add_argument("url", help="Where to send its events (https://...).")
        parser.add_argument(
            "--events", nargs="+", default=[], metavar="TYPE", help=f"Event types (default every one): {SUBSCRIBABLE}."
        )
        parser.add_argument("--description", default="", help="A note for admins, shown on the webhook pages.")

    def handle(self, *args, client, url, events, description, **options):
        """Refuse an unknown client or a refused URL; otherwise print the endpoint and then its secret."""
        owner = Client.objects.filter(name=client).first()
        if owner is None:
            raise CommandError(f"No client named {client!r}; create it first (create_api_token USER --client NAME).")
        try:
            endpoint, secret = add_endpoint(client=owner, url=url, event_types=events, description=description)
        except WebhookError as error:
            raise CommandError(str(error)) from error
        types = ", ".join(endpoint.event_types) or "every type"
        self.stdout.write(f"Endpoint {endpoint.pk} of client {owner.name}: {endpoint.url} ({types}).")
        self.stdout.write("Signing secret (shown once; give it to the receiver):")
        self.stdout.write(secret)
