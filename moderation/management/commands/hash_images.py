"""`manage.py hash_images`: hash the photos stored before hashing (or before centre hashes) existed and bank the
decisions on them."""

from django.core.management.base import BaseCommand

from moderation.services.backfill import BackfillResult, hash_missing_images, missing_count


class Command(BaseCommand):
    """`manage.py hash_images [--batch-size N] [--no-bank]`: a one-off pass after upgrading; safe to repeat."""

    help = (
        "Hash every stored photo that has no PDQ hash yet, or one made before centre hashes, and add the live human "
        "decisions on them to the banks."
    )

    def add_arguments(self, parser):
        """Batch size and whether past decisions fill the banks."""
        parser.add_argument("--batch-size", type=int, default=200, help="Photos read per database query.")
        parser.add_argument("--no-bank", action="store_true", help="Only hash; do not add past decisions to the banks.")

    def handle(self, *args, **options):
        """Report how many photos lack a hash, then progress after every batch, then the totals."""
        total = missing_count()
        self.stdout.write(f"{total} photos without a hash or a centre hash")

        def progress(result: BackfillResult) -> None:
            done = result.hashed + result.unreadable
            self.stdout.write(f"  {done}/{total} read, {result.banked} decisions banked")

        result = hash_missing_images(
            batch_size=options["batch_size"], bank_decisions=not options["no_bank"], progress=progress
        )
        self.stdout.write(f"hashed {result.hashed}, unreadable {result.unreadable}, decisions banked {result.banked}")
