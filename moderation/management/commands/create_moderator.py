"""`manage.py create_moderator NAME [--password P] [--admin]`: create or update a review-desk account."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from moderation.permissions import ensure_groups


class Command(BaseCommand):
    """`manage.py create_moderator NAME`: create or update a moderator or admin account."""

    help = "Create or update a moderator (add --admin for an admin). Prints a generated password when none is given."

    def add_arguments(self, parser):
        """The username, an optional password, and `--admin` for the admin role."""
        parser.add_argument("username")
        parser.add_argument("--password", help="Password to set; a random one is generated and printed otherwise.")
        parser.add_argument("--admin", action="store_true", help="Also make the user an admin (settings, training).")

    @transaction.atomic
    def handle(self, *args, username, password=None, admin=False, **options):
        """Set the password and roles in one transaction; print the password when it was generated."""
        moderators, admins = ensure_groups()
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(**{user_model.USERNAME_FIELD: username})
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.is_active = True
        if admin:
            # Admins use the Django admin too; the admins group carries the model permissions it needs.
            user.is_staff = True
        user.save()
        user.groups.add(moderators)
        if admin:
            user.groups.add(admins)
        role = "admin" if admin else "moderator"
        self.stdout.write(f"{'Created' if created else 'Updated'} {role} {username}.")
        if generated:
            self.stdout.write(f"Password: {password}")
