"""`manage.py create_api_token USER`: the token a marketplace sends as `Authorization: Token <key>`.

The user must exist already (create it in the admin or with `createsuperuser`): minting a token must never
create an account by accident. The token is printed alone on the last line so scripts can take it with `tail -1`.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    """`manage.py create_api_token USER`: print an existing user's API token, creating or rotating it."""

    help = "Print the API token of an existing user (created on first use), alone on the last line."

    def add_arguments(self, parser):
        """The user's name, and `--rotate` to replace a token that may have leaked."""
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true", help="Replace the user's token with a new one.")

    def handle(self, *args, username, rotate=False, **options):
        """Refuse unknown or inactive users; otherwise print the token alone on the last line."""
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}; create the user first, then ask for its token.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive; its token would be refused.")
        if rotate:
            Token.objects.filter(user=user).delete()
        token, created = Token.objects.get_or_create(user=user)
        self.stdout.write(f"{'Created' if created else 'Existing'} API token for {username}:")
        self.stdout.write(token.key)
