"""`manage.py import_training_set DIR`: import the initial folder-per-class training set as training examples."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from moderation.selectors.settings import get_settings
from moderation.services.examples import import_training_set


class Command(BaseCommand):
    """`manage.py import_training_set DIR`: import a folder-per-class training set as initial examples."""

    help = "Import DIR/<label>/* as initial training examples (idempotent). They stay part of every retrain."

    def add_arguments(self, parser):
        """The folder, whether to reference its files instead of copying them, and the prohibited labels."""
        parser.add_argument("directory", type=Path)
        parser.add_argument(
            "--reference", action="store_true", help="Reference the files where they are instead of copying them."
        )
        parser.add_argument(
            "--prohibited",
            action="append",
            default=[],
            help="Mark LABEL as prohibited (gives it the default threshold) when no model names the prohibited labels.",
        )

    def handle(self, *args, directory: Path, reference: bool, prohibited: list[str], **options):
        """Import the examples, give each `--prohibited` label a threshold, and report what was imported or skipped."""
        from classifier.data import DatasetError

        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        try:
            report = import_training_set(directory=directory, copy=not reference)
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        unknown = [label for label in prohibited if label not in report.labels]
        if unknown:
            raise CommandError(f"--prohibited {', '.join(unknown)}: no such label in {directory}")
        if prohibited:
            settings_row = get_settings()
            for label in prohibited:
                settings_row.thresholds.setdefault(label, settings_row.default_threshold)
            settings_row.save(update_fields=["thresholds", "updated_at"])
        for name, reason in report.skipped:
            self.stderr.write(f"skipped {name}: {reason}")
        self.stdout.write(
            f"{report.created} examples imported, {report.existing} already known, {len(report.skipped)} skipped "
            f"(labels: {', '.join(report.labels)})"
        )
