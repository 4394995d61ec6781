"""Bank matches at intake: a copy of a confirmed photo comes down at once (an automated decision), a copy of a
cleared one waits for a moderator with the match shown, flat images and disabled banks never match."""

import pytest

from moderation.models import (
    BankAction,
    BankKind,
    Decision,
    DecisionOutcome,
    Event,
    EventType,
    ImageMatch,
    ImageStatus,
    ListingStatus,
)
from moderation.selectors.audit_trail import statements_of_reasons
from moderation.services import banks, retroaction
from moderation.services.bank_index import BankIndex
from moderation.views.audit import DECISION_COLUMNS, _statement
from tests.support.banks import decided, scored_photo, set_threshold
from tests.support.images import captioned, mirrored, photo, upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bank_desk")]


def test_a_mirrored_copy_of_a_confirmed_photo_is_taken_down_by_an_automated_decision(moderator):
    original = decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    copy = scored_photo("chelsea", transform=mirrored)
    assert copy.status == ImageStatus.CONFIRMED
    decision = copy.decisions.get()
    entry = decision.bank_entry
    assert (decision.automated, decision.moderator, entry.source_decision) == (True, None, original)
    assert "repeating decision" in decision.note and decision.decided_by == "automated (bank match)"
    assert copy.listing.status == ListingStatus.TAKEN_DOWN
    match = ImageMatch.objects.get(image=copy)
    assert (match.entry, match.action, match.applied) == (entry, BankAction.TAKE_DOWN, True)
    assert match.variant != 0 and match.distance <= 31
    matched = Event.objects.get(type=EventType.IMAGE_MATCHED, listing=copy.listing)
    assert matched.data["bank"]["name"] == "Confirmed" and matched.data["entry_id"] == entry.pk
    assert (matched.data["distance"], matched.data["action"]) == (match.distance, "take_down")
    decided_event = Event.objects.get(type=EventType.IMAGE_DECIDED, listing=copy.listing)
    assert decided_event.data["automated"] is True and decided_event.data["moderator"] is None
    assert matched.sequence < decided_event.sequence


def test_the_dsa_export_says_the_take_down_was_automated(moderator):
    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    scored_photo("chelsea", transform=mirrored)
    rows = {row[0]: dict(zip(DECISION_COLUMNS, row, strict=True)) for row in map(_statement, statements_of_reasons())}
    automated = Decision.objects.get(automated=True)
    assert rows[automated.pk]["automated_decision"] == "yes"
    assert rows[automated.pk]["moderator"] == "automated (bank match)"
    assert {row["automated_decision"] for pk, row in rows.items() if pk != automated.pk} == {"no"}


def test_an_automated_decision_trains_nothing_and_fills_no_bank(moderator):
    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    copy = scored_photo("chelsea", transform=mirrored)
    assert not copy.examples.exists() and not copy.bank_entries.exists()


def test_a_copy_of_a_rejected_photo_waits_for_review_with_the_match_shown(moderator):
    decided(scored_photo("coffee"), moderator, DecisionOutcome.REJECT)
    set_threshold(0.6)  # the model alone would clear the copy now
    copy = scored_photo("coffee", transform=mirrored)
    assert copy.status == ImageStatus.FLAGGED and copy.prohibited_probability < 0.6
    match = ImageMatch.objects.get(image=copy)
    assert (match.bank.kind, match.action) == (BankKind.CLEARED, BankAction.REVIEW)


def test_an_admin_may_switch_the_cleared_bank_to_clearing_without_review(moderator, boss):
    decided(scored_photo("coffee"), moderator, DecisionOutcome.REJECT)
    banks.update_bank(bank_id=banks.decision_bank(BankKind.CLEARED).pk, user=boss, action=BankAction.CLEAR)
    copy = scored_photo("coffee", transform=mirrored)
    assert copy.status == ImageStatus.CLEARED and copy.prohibited_probability >= 0.4


def test_a_clearing_bank_matched_only_through_the_centre_sends_the_photo_to_review(moderator, boss):
    decided(scored_photo("coffee", size=(200, 150)), moderator, DecisionOutcome.REJECT)
    banks.update_bank(bank_id=banks.decision_bank(BankKind.CLEARED).pk, user=boss, action=BankAction.CLEAR)
    plain = scored_photo("coffee", size=(200, 150), transform=mirrored)
    # Something new at the borders of a cleared photo leaves its centre alike: a person looks.
    copy = scored_photo("coffee", size=(200, 150), transform=captioned)
    assert plain.status == ImageStatus.CLEARED
    match = ImageMatch.objects.get(image=copy)
    assert copy.status == ImageStatus.FLAGGED and match.variant >= 8
    assert (match.bank.kind, match.action, match.applied) == (BankKind.CLEARED, BankAction.REVIEW, True)


def test_other_photos_flat_photos_and_disabled_banks_never_match(moderator, boss):
    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    assert scored_photo("coffee").status == ImageStatus.FLAGGED
    flat = photo("chelsea", transform=lambda im: im.point(lambda _v: 200))
    bank = banks.create_bank(user=boss, name="Flat", action=BankAction.TAKE_DOWN, quality_floor=0)
    from classifier.perceptual.pdq import hash_image

    banks.import_hashes(bank_id=bank.pk, text=hash_image(flat).hex, user=boss)
    assert scored_photo("chelsea", transform=lambda im: im.point(lambda _v: 200)).status != ImageStatus.CONFIRMED
    banks.update_bank(bank_id=banks.decision_bank(BankKind.CONFIRMED).pk, user=boss, enabled=False)
    assert scored_photo("chelsea", transform=mirrored).status == ImageStatus.FLAGGED
    assert not Decision.objects.filter(automated=True).exists()


def test_a_copy_of_a_confirmed_photo_under_64_pixels_on_a_side_is_not_matched(moderator):
    # At that size look-alike photos are within the match distance of each other (bench/small_photos.py).
    tiny = decided(scored_photo("chelsea", size=(60, 45)), moderator, DecisionOutcome.CONFIRM)
    assert tiny.image.pdq_hash and tiny.image.pdq_quality == 0
    copy = scored_photo("chelsea", transform=mirrored, size=(60, 45))
    assert copy.status == ImageStatus.FLAGGED
    assert not ImageMatch.objects.filter(image=copy).exists()


def test_a_removed_entry_stops_matching(moderator, boss):
    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    for entry in banks.decision_bank(BankKind.CONFIRMED).entries.all():
        banks.remove_entry(entry_id=entry.pk, reason="it was fine", user=boss)
    assert scored_photo("chelsea", transform=mirrored).status == ImageStatus.FLAGGED


def test_another_process_sees_a_decision_at_its_next_refresh(moderator):
    other = BankIndex(refresh_seconds=0)
    other.refresh()
    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    from classifier.perceptual.pdq import hash_image

    copy = hash_image(photo("chelsea", transform=mirrored, size=(96, 72)))
    assert other.lookup({1: copy}) == {}
    other.refresh()
    assert [hit.bank_id for hit in other.lookup({1: copy})[1]] == [banks.decision_bank(BankKind.CONFIRMED).pk]


def test_live_copies_of_a_new_take_down_entry_come_down_and_a_rejected_one_keeps_its_verdict(moderator, reviewer):
    cleared_copy = scored_photo("chelsea", transform=mirrored)
    set_threshold(0.99)
    rejected_copy = scored_photo("chelsea", transform=lambda im: im.rotate(90, expand=True))
    set_threshold()
    rejected_copy.status = ImageStatus.FLAGGED
    rejected_copy.save()
    decided(rejected_copy, reviewer, DecisionOutcome.REJECT)
    assert cleared_copy.status == ImageStatus.FLAGGED  # the cat is flagged at 0.4: make it model-cleared
    cleared_copy.status = ImageStatus.CLEARED
    cleared_copy.save()
    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    assert retroaction.apply_takedown_entries() == 1
    cleared_copy.refresh_from_db()
    rejected_copy.refresh_from_db()
    assert cleared_copy.status == ImageStatus.CONFIRMED and cleared_copy.decisions.get().automated
    assert rejected_copy.status == ImageStatus.REJECTED
    assert ImageMatch.objects.get(image=rejected_copy).applied is False
    assert retroaction.apply_takedown_entries() == 0  # nothing new since


def test_same_bytes_reuse_the_score_copy_the_hash_and_are_matched_on_a_worker(
    moderator, published, active_model, django_capture_on_commit_callbacks
):
    from moderation import outbox
    from tests.support.factories import store_listing

    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    with django_capture_on_commit_callbacks(execute=True):
        again = store_listing(external_id="again", files=[upload(photo("chelsea", size=(96, 72)))]).images.get()
    assert again.pdq_hash and again.status == ImageStatus.FLAGGED and published[outbox.MATCH_IMAGES] == [[again.pk]]
    assert retroaction.match_stored(image_ids=[again.pk]) == [again.pk]
    again.refresh_from_db()
    assert again.status == ImageStatus.CONFIRMED


def test_the_sweeper_queues_the_retroactive_pass_when_bank_changes_are_past_it(moderator, monkeypatch):
    from moderation import outbox

    sent = []
    assert retroaction.queue_if_behind() is False
    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    monkeypatch.setattr(outbox, "send_once_on_commit", lambda *task: sent.append(task))
    assert retroaction.queue_if_behind() is True and sent == [(outbox.APPLY_TAKEDOWN_ENTRIES,)]
    retroaction.apply_takedown_entries()
    assert retroaction.queue_if_behind() is False and len(sent) == 1


def test_the_moderator_record_leaves_automated_decisions_out(moderator):
    from moderation.selectors.appeals import moderator_records

    decided(scored_photo("chelsea"), moderator, DecisionOutcome.CONFIRM)
    scored_photo("chelsea", transform=mirrored)
    records = {record.user.username: record.decisions for record in moderator_records()}
    assert records == {"first": 1}


def test_a_copy_of_a_rejected_photo_goes_to_review_even_above_the_auto_action_threshold(moderator):
    from moderation.selectors.settings import get_settings

    decided(scored_photo("coffee"), moderator, DecisionOutcome.REJECT)
    row = get_settings()
    row.auto_thresholds = {"weapon": 0.42}
    row.save()
    copy = scored_photo("coffee", transform=mirrored)  # 0.54: the model alone would take it down
    assert copy.status == ImageStatus.FLAGGED and copy.prohibited_probability >= 0.42
    assert not Decision.objects.filter(image=copy).exists()
    assert ImageMatch.objects.get(image=copy).action == BankAction.REVIEW
    fresh = scored_photo("chelsea")  # 0.43 and no match: taken down by the model
    assert fresh.status == ImageStatus.CONFIRMED
    decision = Decision.objects.get(image=fresh)
    assert decision.automated and decision.bank_entry is None and decision.auto_threshold == 0.42
