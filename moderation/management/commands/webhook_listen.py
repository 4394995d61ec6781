"""`manage.py webhook_listen --port 9000 [--secret whsec_... | --secret-file PATH]`: a local webhook receiver.

It verifies every request's signature (`moderation.devstack.listener`), prints each event and answers 204, so a
developer sees what a marketplace would receive. `make run` starts it for the demo client; point your own endpoint
at it with `manage.py add_webhook CLIENT http://127.0.0.1:9000/` (with DEBUG on, or VIGIA_WEBHOOK_ALLOW_HTTP and
VIGIA_WEBHOOK_ALLOW_LOOPBACK set) and give it the secret that command printed.
"""

import signal
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from moderation.devstack.listener import Verifier, read_secrets, serve


class Command(BaseCommand):
    """`manage.py webhook_listen`: receive, verify and print webhooks until Ctrl-C."""

    help = "Run a local webhook receiver that verifies signatures and prints each event."

    def add_arguments(self, parser):
        """Where to listen, which secrets to verify with, and an optional record of what arrived."""
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=9000, help="Port to listen on.")
        parser.add_argument("--secret", action="append", default=[], help="A signing secret (repeat for several).")
        parser.add_argument("--secret-file", type=Path, help="A file with the signing secrets, one a line.")
        parser.add_argument("--record", type=Path, help="Append each verified event to this file as a JSON line.")
        parser.add_argument("--quiet", action="store_true", help="Print rejections only, not every event.")

    def handle(self, *args, host, port, secret, secret_file, record, quiet, **options):
        """Serve until interrupted; refuse to start without a secret."""
        secrets = list(secret)
        if secret_file:
            try:
                secrets += read_secrets(secret_file)
            except OSError as error:
                raise CommandError(f"Cannot read {secret_file}: {error}") from error
        try:
            verifier = Verifier(secrets)
        except ValueError as error:
            raise CommandError(f"{error} Give --secret or --secret-file (add_webhook prints the secret).") from error
        try:
            listener = serve(
                host=host, port=port, verifier=verifier, out=self.stdout, err=self.stderr, record=record, quiet=quiet
            )
        except OSError as error:
            raise CommandError(f"Cannot listen on {host}:{port}: {error}") from error
        self.stdout.write(
            f"Listening for webhooks on http://{host}:{listener.server_address[1]}/ "
            f"({len(secrets)} secret{'s' if len(secrets) != 1 else ''}); Ctrl-C stops."
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a supervisor's stop ends it like Ctrl-C
        try:
            listener.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            listener.server_close()
            self.stdout.write(f"Stopped: {listener.received} verified, {listener.rejected} rejected.")
