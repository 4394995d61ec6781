"""`manage.py create_api_token USER [--client NAME]`: a new API key a marketplace sends as `Authorization: Token <key>`.

The user must exist already (create it in the admin or with `createsuperuser`): minting a key must never create an
account by accident. The key belongs to a client (created when it does not exist yet; `marketplace` by default) and
is printed alone on the last line so scripts can take it with `tail -1`. Keys are stored hashed: this is the only
time the key is shown, and asking again makes another key.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from moderation.services.clients import ClientError, get_or_create_client, issue_key, revoke_keys_of

DEFAULT_CLIENT = "marketplace"


class Command(BaseCommand):
    """`manage.py create_api_token USER [--client NAME] [--name NAME] [--rotate]`: print a new API key."""

    help = "Create an API key for an existing user and a client, and print it alone on the last line."

    def add_arguments(self, parser):
        """The user's name; the client; the key's name; `--rotate` to revoke the user's other keys of the client."""
        parser.add_argument("username")
        parser.add_argument("--client", default=DEFAULT_CLIENT, help="Client the key belongs to (created if new).")
        parser.add_argument("--name", default="", help="A name for the key, shown in the admin (default: USER).")
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke the user's other keys of this client (one may have leaked)."
        )

    def handle(self, *args, username, client, name, rotate=False, **options):
        """Refuse unknown or inactive users; otherwise print the new key alone on the last line."""
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}; create the user first, then ask for its key.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive; its key would be refused.")
        try:
            owner, created = get_or_create_client(name=client)
            revoked = revoke_keys_of(client=owner, user=user) if rotate else 0
            _, key = issue_key(client=owner, user=user, name=name or username)
        except ClientError as error:
            raise CommandError(str(error)) from error
        if created:
            self.stdout.write(f"Created client {owner.name}.")
        if revoked:
            self.stdout.write(f"Revoked {revoked} earlier key(s) of {username} for {owner.name}.")
        self.stdout.write(f"New API key of client {owner.name} for {username} (shown once; it is stored hashed):")
        self.stdout.write(key)
