"""`manage.py bootstrap_demo`: demo accounts for a local desk (debug only).

Creates an admin, a moderator and a marketplace API user with a token, and prints their credentials. The
passwords are generated once and kept in `var/demo-credentials.json` (mode 0600) so every later start prints
the same ones; running the command again changes nothing else. It refuses to run with DEBUG off because printed
passwords have no place on a production machine: use `create_moderator` and `create_api_token` there.
"""

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from moderation.permissions import ensure_groups


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
            api_user, _ = get_user_model().objects.get_or_create(username=options["api_user"])
            token, _ = Token.objects.get_or_create(user=api_user)
            credentials["api_user"] = api_user.username
            credentials["api_token"] = token.key

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(credentials, handle, indent=2)
        for role in ("admin", "moderator"):
            account = credentials[role]
            self.stdout.write(f"demo {role}: {account['username']} / {account['password']}")
        self.stdout.write(f"demo API token ({credentials['api_user']}): {credentials['api_token']}")

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
