"""`manage.py hash_images`: photos stored before hashing get their hash, and the verdicts on them fill the banks."""

import io

import pytest
from django.core.management import call_command

from classifier.perceptual.pdq import hash_image
from moderation.models import BankEntry, BankKind, DecisionOutcome, ListingImage
from moderation.services.backfill import hash_missing_images
from tests.support.banks import decided
from tests.support.factories import make_flagged

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bank_desk")]


def test_unhashed_photos_are_hashed_and_their_live_decisions_banked_once(moderator):
    confirmed = make_flagged(with_file=True)
    decided(confirmed, moderator, DecisionOutcome.CONFIRM)
    waiting = make_flagged(with_file=True)
    assert not BankEntry.objects.exists()

    out = io.StringIO()
    call_command("hash_images", "--batch-size", "1", stdout=out)

    confirmed.refresh_from_db()
    waiting.refresh_from_db()
    with confirmed.file.open("rb") as handle:
        assert confirmed.pdq_hash == hash_image(handle.read()).hex
    assert waiting.pdq_hash and waiting.pdq_quality is not None and len(waiting.pdq_dihedral) == 8 * 64
    source = BankEntry.objects.get(derived="", source_decision__image=confirmed)
    assert source.bank.kind == BankKind.CONFIRMED and source.pdq_hash == confirmed.pdq_hash
    assert not BankEntry.objects.filter(source_image=waiting).exists()
    assert (
        "2 photos without a hash" in out.getvalue() and "hashed 2, unreadable 0, decisions banked 1" in out.getvalue()
    )

    entries = BankEntry.objects.count()
    again = hash_missing_images()
    assert (again.hashed, again.banked, BankEntry.objects.count()) == (0, 0, entries)


def test_an_unreadable_file_is_counted_and_left_for_the_rest_to_go_on(moderator):
    broken = make_flagged(with_file=True)
    broken.file.storage.delete(broken.file.name)
    fine = make_flagged(with_file=True)

    result = hash_missing_images()

    assert (result.hashed, result.unreadable) == (1, 1)
    assert ListingImage.objects.get(pk=broken.pk).pdq_hash == ""
    assert ListingImage.objects.get(pk=fine.pk).pdq_hash


def test_an_undone_decision_banks_nothing(moderator):
    from moderation.services import review

    image = make_flagged(with_file=True)
    decision = decided(image, moderator, DecisionOutcome.REJECT)
    review.undo_decision(user=moderator, decision_id=decision.pk)

    assert hash_missing_images().banked == 0
    assert not BankEntry.objects.exists()
