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
        "2 photos without a hash or a centre hash" in out.getvalue()
        and "hashed 2, unreadable 0, decisions banked 1" in out.getvalue()
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


def old_hash(image: ListingImage) -> None:
    """The photo as an earlier release left it: its own hash, stale variants, no centre hash."""
    with image.file.open("rb") as handle:
        pdq = hash_image(handle.read())
    stale = pdq.hex + "0" * 64 * 7
    ListingImage.objects.filter(pk=image.pk).update(
        pdq_hash=pdq.hex, pdq_quality=pdq.quality, pdq_dihedral=stale, pdq_centre="", pdq_centre_quality=None
    )


def test_photos_hashed_before_centre_hashes_are_hashed_again_and_their_decisions_gain_the_centre(moderator):
    image = make_flagged(with_file=True)
    old_hash(image)
    decision = decided(ListingImage.objects.get(pk=image.pk), moderator, DecisionOutcome.CONFIRM)
    assert not BankEntry.objects.filter(derived__startswith="centre").exists()
    kept = set(BankEntry.objects.values_list("pk", flat=True))

    result = hash_missing_images()

    image.refresh_from_db()
    with image.file.open("rb") as handle:
        fresh = hash_image(handle.read())
    assert (image.pdq_dihedral, image.pdq_centre) == (fresh.dihedral_hex, fresh.centre_hex)
    assert (result.hashed, result.banked) == (1, 1)
    centre = BankEntry.objects.get(derived__startswith="centre")
    assert (centre.pdq_hash, centre.source_decision) == (fresh.centre_hex[:64], decision)
    assert kept <= set(BankEntry.objects.filter(removed_at__isnull=True).values_list("pk", flat=True))
    assert hash_missing_images().hashed == 0


def test_a_decision_whose_entry_an_admin_removed_is_not_banked_again(moderator, boss):
    from moderation.services import banks

    image = make_flagged(with_file=True)
    old_hash(image)
    decided(ListingImage.objects.get(pk=image.pk), moderator, DecisionOutcome.CONFIRM)
    entry = BankEntry.objects.get(derived="")
    banks.remove_entry(user=boss, entry_id=entry.pk, reason="Not prohibited after all.")

    result = hash_missing_images()

    assert (result.hashed, result.banked) == (1, 0)
    assert not BankEntry.objects.filter(derived__startswith="centre").exists()
    assert not BankEntry.objects.filter(pdq_hash=entry.pdq_hash, removed_at__isnull=True).exists()
