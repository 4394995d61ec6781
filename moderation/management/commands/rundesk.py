"""`manage.py rundesk`: the whole desk on one machine, as `make run` starts it.

The steps and processes live in `moderation.devstack.desk`; this command only reads its options and reports a
failed start as a command error.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from moderation.devstack.desk import Desk
from moderation.devstack.processes import DevstackError


class Command(BaseCommand):
    """`manage.py rundesk`: read the options, run the desk, report a failed start."""

    help = (
        "Run the whole desk: migrate, Redis (REDIS_URL or an embedded one), a trained model, demo accounts, "
        "Celery workers and beat, the web server and demo listings. Ctrl-C stops everything it started."
    )

    def add_arguments(self, parser):
        """Where to serve, the first model's training size, demo data and web workers."""
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="Address to serve on.")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="Port to serve on.")
        parser.add_argument(
            "--per-class", type=int, default=300, help="Fashion-MNIST training images per class for the first model."
        )
        parser.add_argument("--no-demo", action="store_true", help="Skip demo accounts and demo listings.")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers when DEBUG is off.")

    def handle(self, *args, **options):
        """Run the desk until Ctrl-C, SIGTERM or a crashed process; a failure becomes a command error."""
        desk = Desk(
            self.stdout,
            options["host"],
            options["port"],
            web_workers=options["web_workers"],
            per_class=options["per_class"],
            demo=settings.DEBUG and not options["no_demo"],
        )
        try:
            desk.run()
        except DevstackError as error:
            raise CommandError(str(error)) from error
