"""Hash banks: decisions fill them, admins change them (audited), imports are all or nothing, workers follow them."""

import pytest

from classifier.perceptual.pdq import hash_image
from moderation.models import AuditAction, AuditEntry, BankAction, BankEntry, BankKind, DecisionOutcome, HashBank
from moderation.selectors.banks import export_lines
from moderation.services import banks, review
from moderation.services.bank_index import BankIndex
from moderation.services.banks import BankError, ImportRejected
from tests.support.banks import decided, scored_photo
from tests.support.images import captioned, photo

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bank_desk")]

HASH_A, HASH_B = "a" * 64, "0123456789abcdef" * 4


@pytest.fixture
def imported(boss):
    return banks.create_bank(user=boss, name="Shared", action=BankAction.REVIEW, labels="weapons, drugs")


def live_hashes(bank) -> set[str]:
    return set(BankEntry.objects.filter(bank=bank, removed_at__isnull=True).values_list("pdq_hash", flat=True))


def test_a_confirmation_fills_the_confirmed_bank_and_a_rejection_the_cleared_one(moderator):
    cat, coffee = scored_photo("chelsea"), scored_photo("coffee")
    confirm = decided(cat, moderator, DecisionOutcome.CONFIRM)
    decided(coffee, moderator, DecisionOutcome.REJECT)
    entry = BankEntry.objects.get(bank__kind=BankKind.CONFIRMED, derived="")
    assert (entry.pdq_hash, entry.quality, entry.source_decision, entry.source_image) == (
        cat.pdq_hash,
        cat.pdq_quality,
        confirm,
        cat,
    )
    crops = BankEntry.objects.filter(bank__kind=BankKind.CONFIRMED).exclude(derived="")
    assert sorted(crops.values_list("derived", flat=True)) == ["centre_12.5", "crop_2.5", "crop_5"]
    assert crops.get(derived="centre_12.5").pdq_hash == cat.pdq_centre[:64]
    assert {crop.source_decision for crop in crops} == {confirm}
    assert coffee.pdq_hash in live_hashes(banks.decision_bank(BankKind.CLEARED))


def test_a_copy_with_its_borders_trimmed_matches_through_the_crop_entries(moderator):
    from classifier.perceptual.pdq import distance

    original = scored_photo("chelsea")
    decided(original, moderator, DecisionOutcome.CONFIRM)
    trimmed = scored_photo("chelsea", transform=lambda im: im.crop((5, 4, im.width - 5, im.height - 4)))
    assert distance(bytes.fromhex(trimmed.pdq_hash), bytes.fromhex(original.pdq_hash)) > 31
    assert trimmed.status == "confirmed" and trimmed.matches.get().entry.derived.startswith("crop_")


def test_a_copy_with_a_caption_matches_through_its_centre(moderator):
    from classifier.perceptual.pdq import distance

    original = scored_photo("coffee", size=(200, 150))
    decided(original, moderator, DecisionOutcome.CONFIRM)
    copy = scored_photo("coffee", transform=captioned, size=(200, 150))
    assert distance(bytes.fromhex(copy.pdq_hash), bytes.fromhex(original.pdq_hash)) > 31
    match = copy.matches.get()
    assert copy.status == "confirmed" and match.entry.derived == "centre_12.5"
    assert (match.variant, match.how) == (8, "its centre")


def test_a_centre_too_small_to_trust_never_matches(moderator):
    image = scored_photo("coffee")  # 96 x 72: its centre is 72 x 54, under the 64 pixels a photo needs to match
    assert image.pdq_quality > 49 and image.pdq_centre and image.pdq_centre_quality == 0
    decided(image, moderator, DecisionOutcome.CONFIRM)
    copy = scored_photo("coffee", transform=captioned)
    assert copy.status != "confirmed" and not copy.matches.filter(variant__gte=8).exists()


def test_an_undone_decision_takes_its_entry_out_again_and_says_so(moderator):
    decision = decided(scored_photo(), moderator, DecisionOutcome.CONFIRM)
    review.undo_decision(user=moderator, decision_id=decision.pk)
    entries = list(BankEntry.objects.all())
    assert len(entries) == 4 and all(e.removed_at and e.removal_reason == "Decision undone." for e in entries)
    removed = AuditEntry.objects.filter(action=AuditAction.BANK_ENTRY_REMOVED).values_list("object_id", flat=True)
    assert sorted(removed) == sorted(str(e.pk) for e in entries)


def test_a_photo_without_a_hash_adds_nothing(moderator):
    from tests.support.factories import make_flagged

    image = make_flagged(with_file=True)
    decided(image, moderator, DecisionOutcome.CONFIRM)
    assert not BankEntry.objects.exists()


def test_every_change_bumps_the_version_and_a_worker_index_follows_adds_and_removals(boss, imported):
    index = BankIndex(refresh_seconds=0)
    index.refresh()
    assert len(index) == 0
    banks.import_hashes(bank_id=imported.pk, text=f"{HASH_A}\n{HASH_B},weapons\n", user=boss)
    assert index.refresh() and len(index) == 2
    entry = BankEntry.objects.get(pdq_hash=HASH_A)
    banks.remove_entry(entry_id=entry.pk, reason="shared by mistake", user=boss)
    assert index.refresh() and len(index) == 1
    assert not index.refresh()  # nothing changed since


def test_a_good_import_adds_every_line_with_its_label_and_is_audited(boss, imported):
    text = f"# from the programme\n{HASH_A.upper()},weapons\n\n{HASH_B}\n"
    assert banks.import_hashes(bank_id=imported.pk, text=text, user=boss) == 2
    assert dict(BankEntry.objects.values_list("pdq_hash", "label")) == {HASH_A: "weapons", HASH_B: ""}
    entry = AuditEntry.objects.get(action=AuditAction.BANK_IMPORTED)
    assert entry.after == {"entries": 2} and entry.actor == boss


def test_a_bad_import_names_every_bad_line_and_stores_nothing(boss, imported):
    banks.import_hashes(bank_id=imported.pk, text=HASH_B, user=boss)
    text = "\n".join(
        [
            HASH_A,  # 1: fine
            "zz" * 32,  # 2: not hex
            "abc",  # 3: too short
            HASH_A,  # 4: twice in the file
            f"{'b' * 64},guns",  # 5: a label the bank does not have
            HASH_B,  # 6: in the bank already
            "c" * 65,  # 7: too long
        ]
    )
    with pytest.raises(ImportRejected) as rejected:
        banks.import_hashes(bank_id=imported.pk, text=text, user=boss)
    lines = dict(rejected.value.errors)
    assert sorted(lines) == [2, 3, 4, 5, 6, 7]
    assert "0-9 and a-f" in lines[2] and "has 3" in lines[3] and "line 1" in lines[4]
    assert "unknown label 'guns'" in lines[5] and "in the bank already" in lines[6] and "has 65" in lines[7]
    assert live_hashes(imported) == {HASH_B}


def test_an_import_past_the_line_limit_or_without_hashes_is_refused(boss, imported, settings):
    settings.VIGIA_BANK_IMPORT_MAX_LINES = 2
    with pytest.raises(ImportRejected, match="bad line"):
        banks.import_hashes(bank_id=imported.pk, text=f"{HASH_A}\n{HASH_B}\n{'c' * 64}", user=boss)
    with pytest.raises(ImportRejected):
        banks.import_hashes(bank_id=imported.pk, text="# nothing\n", user=boss)
    assert not BankEntry.objects.exists()


def test_changing_a_bank_is_audited_with_what_changed(boss):
    bank = banks.decision_bank(BankKind.CLEARED)
    banks.update_bank(bank_id=bank.pk, user=boss, action=BankAction.CLEAR, match_distance=20)
    entry = AuditEntry.objects.get(action=AuditAction.BANK_CHANGED)
    assert entry.before == {"action": BankAction.REVIEW, "match_distance": 31}
    assert entry.after == {"action": BankAction.CLEAR, "match_distance": 20}


@pytest.mark.parametrize(
    "change", [{"match_distance": 64}, {"quality_floor": 101}, {"action": "delete"}, {"name": " "}, {"colour": 1}]
)
def test_bad_bank_settings_are_refused(boss, change):
    bank = banks.decision_bank(BankKind.CONFIRMED)
    with pytest.raises(BankError):
        banks.update_bank(bank_id=bank.pk, user=boss, **change)
    assert not AuditEntry.objects.filter(action=AuditAction.BANK_CHANGED).exists()


def test_removing_needs_a_reason_and_happens_once(boss, imported):
    banks.import_hashes(bank_id=imported.pk, text=HASH_A, user=boss)
    entry = BankEntry.objects.get()
    with pytest.raises(BankError, match="why"):
        banks.remove_entry(entry_id=entry.pk, reason=" ", user=boss)
    banks.remove_entry(entry_id=entry.pk, reason="wrong", user=boss)
    with pytest.raises(BankError, match="already removed"):
        banks.remove_entry(entry_id=entry.pk, reason="again", user=boss)


def test_export_writes_the_live_entries_as_an_import_reads_them(boss, imported):
    banks.import_hashes(bank_id=imported.pk, text=f"{HASH_A},weapons\n{HASH_B}", user=boss)
    banks.remove_entry(entry_id=BankEntry.objects.get(pdq_hash=HASH_B).pk, reason="gone", user=boss)
    lines = list(export_lines(imported.pk))
    assert lines[-1] == f"{HASH_A},weapons\n" and all(line.startswith("#") for line in lines[:-1])
    other = banks.create_bank(user=boss, name="Copy", labels=["weapons"])
    assert banks.import_hashes(bank_id=other.pk, text="".join(lines), user=boss) == 1


def test_only_one_confirmed_and_one_cleared_bank_exist():
    assert banks.decision_bank(BankKind.CONFIRMED) == banks.decision_bank(BankKind.CONFIRMED)
    assert HashBank.objects.filter(kind=BankKind.CONFIRMED).count() == 1


def test_a_flat_image_hash_has_no_quality():
    assert hash_image(photo("chelsea", transform=lambda im: im.point(lambda _v: 128))).quality < 50


def test_a_tiny_photo_whose_crops_hash_alike_is_banked_once_per_hash(moderator, monkeypatch):
    from moderation.services import banks as service

    image = scored_photo("chelsea")
    monkeypatch.setattr(service, "_crops", lambda _image: [("crop_2.5", image.pdq_hash, 90), ("crop_5", "e" * 64, 90)])
    decided(image, moderator, DecisionOutcome.CONFIRM)
    entries = dict(BankEntry.objects.values_list("pdq_hash", "derived"))
    assert entries == {image.pdq_hash: "", "e" * 64: "crop_5", image.pdq_centre[:64]: "centre_12.5"}
