"""`manage.py bootstrap_demo`: demo accounts for a local desk (debug only).

Creates an admin, a moderator and a marketplace API user with a key of the demo client, and prints their
credentials. The passwords are generated once and kept in `var/demo-credentials.json` (mode 0600) so every
later start prints the same ones; running the command again changes nothing else. It refuses to run with DEBUG
off because printed passwords have no place on a production machine: use `create_moderator` and
`create_api_token` there.

With `--webhook-url` it also registers that URL as the demo client's webhook endpoint (the local receiver
`make run` starts, `webhook_listen`) and writes its signing secrets, one a line and mode 0600, to
`--webhook-secrets-file` for the receiver; an endpoint the demo registered earlier at another URL is disabled.
"""

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from moderation import clock
from moderation.models import ClientKey, WebhookEndpoint
from moderation.permissions import ensure_groups
from moderation.services.clients import api_user as desk_api_user
from moderation.services.clients import get_or_create_client, issue_key
from moderation.services.webhooks import endpoints, signing

DEMO_CLIENT = "demo-marketplace"
#: How the demo's own endpoint is told apart from endpoints an admin added for the demo client.
DEMO_ENDPOINT_DESCRIPTION = "The local receiver of make run (webhook_listen)."


class Command(BaseCommand):
    """`manage.py bootstrap_demo`: create or restore the demo accounts and print their credentials."""

    help = "Create demo admin, moderator and API accounts and print their credentials (DEBUG only)."

    def add_arguments(self, parser):
        """The demo accounts' usernames and where their generated credentials are kept."""
        parser.add_argument("--admin", default="admin", help="Username of the demo admin.")
        parser.add_argument("--moderator", default="moderator", help="Username of the demo moderator.")
        parser.add_argument("--api-user", default="marketplace", help="Username the demo marketplace posts as.")
        parser.add_argument(
            "--credentials-file",
            default=None,
            help="Where the generated credentials are kept (default: VAR_DIR/demo-credentials.json).",
        )
        parser.add_argument("--webhook-url", default="", help="Register this URL as the demo client's endpoint.")
        parser.add_argument(
            "--webhook-secrets-file",
            default=None,
            help="Where that endpoint's signing secrets go, one a line (default: VAR_DIR/demo-webhook-secrets).",
        )

    def handle(self, *args, **options):
        """Ensure the groups and accounts in one transaction, save the credentials file, print the credentials."""
        if not settings.DEBUG:
            raise CommandError("bootstrap_demo prints passwords and runs only with DEBUG=1.")
        path = Path(options["credentials_file"] or Path(settings.VAR_DIR) / "demo-credentials.json")
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}

        with transaction.atomic():
            moderators, admins = ensure_groups()
            credentials = {
                "admin": self.ensure_user(options["admin"], stored.get("admin"), admins, superuser=True),
                "moderator": self.ensure_user(options["moderator"], stored.get("moderator"), moderators),
            }
            api_user = desk_api_user(options["api_user"])
            client, _ = get_or_create_client(name=DEMO_CLIENT, description="The demo marketplace of `make run`.")
            credentials["api_user"] = api_user.username
            credentials["client"] = client.name
            credentials["api_token"] = self.demo_key(client, api_user, stored.get("api_token"))
            if options["webhook_url"]:
                endpoint = self.demo_endpoint(client, options["webhook_url"])
                credentials["webhook_url"] = endpoint.url
                secrets_path = Path(options["webhook_secrets_file"] or Path(settings.VAR_DIR) / "demo-webhook-secrets")
                secrets = signing.valid_secrets(endpoint_id=endpoint.pk, at=clock.now())
                write_private(secrets_path, "".join(f"{secret}\n" for secret in secrets))

        write_private(path, json.dumps(credentials, indent=2))
        for role in ("admin", "moderator"):
            account = credentials[role]
            self.stdout.write(f"demo {role}: {account['username']} / {account['password']}")
        self.stdout.write(f"demo API token ({credentials['api_user']}): {credentials['api_token']}")
        if credentials.get("webhook_url"):
            self.stdout.write(f"demo webhooks: {credentials['client']} -> {credentials['webhook_url']}")

    def demo_endpoint(self, client, url: str) -> WebhookEndpoint:
        """The demo client's endpoint at `url`, enabled (made with a secret the first time); other demo ones off."""
        ours = WebhookEndpoint.objects.filter(client=client, description=DEMO_ENDPOINT_DESCRIPTION)
        for stale in ours.exclude(url=url).filter(is_enabled=True):
            endpoints.disable_endpoint(endpoint_id=stale.pk, reason=f"make run's receiver moved to {url}.")
        endpoint = ours.filter(url=url).order_by("id").first()
        if endpoint is None:
            try:
                endpoint, _secret = endpoints.add_endpoint(
                    client=client, url=url, description=DEMO_ENDPOINT_DESCRIPTION
                )
            except endpoints.WebhookError as error:
                raise CommandError(f"The demo webhook endpoint {url} was refused: {error}") from error
        elif not endpoint.is_enabled or endpoint.failing_since:
            # The receiver was simply not running while the desk was stopped.
            endpoint = endpoints.enable_endpoint(endpoint_id=endpoint.pk)
        return endpoint

    def demo_key(self, client, user, stored: str | None) -> str:
        """The stored demo key while it is still valid for the demo client, else a new one (keys are hashed)."""
        if stored:
            try:
                key = ClientKey.objects.get_from_key(stored)
            except ClientKey.DoesNotExist:
                key = None
            if key is not None and key.client_id == client.pk and not key.has_expired:
                return stored
        return issue_key(client=client, user=user, name="demo")[1]

    def ensure_user(self, username: str, stored: dict | None, group, superuser: bool = False) -> dict:
        """Create the user or bring it back to the stored password; returns its credentials."""
        user, created = get_user_model().objects.get_or_create(username=username)
        password = stored.get("password") if stored and stored.get("username") == username else None
        if created or not password or not user.check_password(password):
            password = password or secrets.token_urlsafe(9)
            user.set_password(password)
        user.is_active = True
        if superuser:
            user.is_staff = True
            user.is_superuser = True
        user.save()
        user.groups.add(group)
        return {"username": username, "password": password}


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
