"""Appeals (services/appeals.py): filing within the window, upholding, and an overturn that restores the listing and
relabels its training example with the lineage kept."""

import pytest

from moderation.models import (
    Appeal,
    AppealStatus,
    Client,
    Decision,
    DecisionOutcome,
    Event,
    EventType,
    ImageStatus,
    Listing,
    ListingStatus,
    PolicyCategory,
    TrainingExample,
    TrainingState,
)
from moderation.selectors.settings import get_settings
from moderation.services import appeals, review
from moderation.services.events import moderator_pseudonym
from moderation.services.listings import withdraw_listing
from tests.support.factories import make_flagged, make_moderator, make_user, taken_down_listing

pytestmark = pytest.mark.django_db


@pytest.fixture
def listing(moderator, media_root, active_model):
    return taken_down_listing(moderator=moderator)


def file(listing, text="The coat is mine and allowed.", **extra):
    return appeals.file_appeal(listing_id=listing.pk, client=listing.client, text=text, **extra)


def events_of(listing, *types):
    rows = Event.objects.filter(listing=listing).order_by("sequence")
    return list(rows.filter(type__in=types) if types else rows)


def test_filing_contests_the_live_confirmations_and_writes_the_event_without_the_text(listing, frozen_clock):
    filing = file(listing)
    appeal = filing.appeal
    assert filing.created and appeal.status == AppealStatus.OPEN and appeal.client == listing.client
    confirmation = Decision.objects.get(image__listing=listing)
    assert list(appeal.contested.all()) == [confirmation]
    assert appeal.created_at == frozen_clock.current
    (event,) = events_of(listing, EventType.APPEAL_RECEIVED)
    assert event.data["appeal_id"] == appeal.pk
    assert event.data["contested_image_ids"] == [confirmation.image_id]
    assert event.data["received_at"] == frozen_clock.current.isoformat()
    assert "mine and allowed" not in str(event.data)


@pytest.mark.parametrize("text", ["", "   ", "x" * 5001])
def test_empty_or_overlong_text_is_invalid_and_stores_nothing(listing, text):
    with pytest.raises(appeals.InvalidAppeal) as raised:
        file(listing, text=text)
    assert raised.value.code == "invalid"
    assert not Appeal.objects.exists()


def test_text_of_exactly_the_limit_is_accepted(listing):
    assert file(listing, text="x" * 5000).created


def test_a_live_listing_has_nothing_to_appeal(moderator, media_root, active_model):
    image = make_flagged()
    review.claim_item(user=moderator, image_id=image.pk)
    review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.REJECT)
    assert Listing.objects.get(pk=image.listing_id).status == ListingStatus.LIVE
    with pytest.raises(appeals.NothingToAppeal) as raised:
        file(image.listing)
    assert raised.value.code == "nothing_to_appeal"


def test_a_withdrawn_listing_has_nothing_to_appeal(listing):
    withdraw_listing(listing_id=listing.pk)
    with pytest.raises(appeals.NothingToAppeal):
        file(listing)


def test_the_window_closes_appeal_window_days_after_the_latest_confirmation(frozen_clock, listing):
    settings_row = get_settings()
    assert settings_row.appeal_window_days == 183
    frozen_clock.advance(days=183, seconds=1)
    with pytest.raises(appeals.AppealWindowClosed) as raised:
        file(listing)
    assert raised.value.code == "appeal_window_closed"
    assert not Appeal.objects.exists()
    settings_row.appeal_window_days = 200
    settings_row.save()
    assert file(listing).created


def test_an_appeal_on_the_last_day_of_the_window_is_accepted(frozen_clock, listing):
    frozen_clock.advance(days=183)
    assert file(listing).created


def test_a_second_appeal_of_the_same_confirmations_is_refused_with_the_first(listing):
    first = file(listing).appeal
    with pytest.raises(appeals.AlreadyAppealed) as raised:
        file(listing, text="Please look again.")
    assert raised.value.code == "already_appealed" and raised.value.appeal == first
    assert Appeal.objects.count() == 1


def test_a_later_confirmation_can_be_appealed_on_its_own(listing, moderator):
    first = file(listing).appeal
    image = make_flagged(listing=listing, with_file=True)
    review.claim_item(user=moderator, image_id=image.pk)
    later = review.decide(user=moderator, image_id=image.pk, outcome=DecisionOutcome.CONFIRM)
    second = file(listing).appeal
    assert list(second.contested.all()) == [later]
    assert later not in first.contested.all()


def test_another_clients_listing_does_not_exist_for_the_caller(listing):
    other = Client.objects.create(name="other")
    with pytest.raises(Listing.DoesNotExist):
        appeals.file_appeal(listing_id=listing.pk, client=other, text="mine")


def test_the_same_idempotency_key_returns_the_appeal_it_filed(listing):
    first = file(listing, idempotency_key="k-1")
    again = file(listing, idempotency_key="k-1")
    assert first.created and not again.created and again.appeal == first.appeal
    assert len(events_of(listing, EventType.APPEAL_RECEIVED)) == 1


def test_an_idempotency_key_reused_for_other_text_is_refused(listing):
    from moderation.services.ingest import IdempotencyKeyReused

    file(listing, idempotency_key="k-1")
    with pytest.raises(IdempotencyKeyReused):
        file(listing, text="something else", idempotency_key="k-1")


def test_uphold_keeps_the_takedown(listing, reviewer, frozen_clock):
    appeal = file(listing).appeal
    note = "The photo shows it."
    decided = appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome="uphold", note=note)
    assert decided.status == AppealStatus.UPHELD
    assert (decided.decided_by, decided.decided_at, decided.note) == (reviewer, frozen_clock.current, note)
    listing.refresh_from_db()
    assert listing.status == ListingStatus.TAKEN_DOWN
    confirmation = Decision.objects.get(image__listing=listing)
    assert confirmation.undone_at is None and confirmation.overturned_at is None
    (event,) = events_of(listing, EventType.APPEAL_DECIDED)
    assert event.data["status"] == "upheld" and event.data["note"] == "The photo shows it."
    assert event.data["reviewer"] == moderator_pseudonym(reviewer.pk)
    assert event.data["restored_image_ids"] == [] and event.data["listing_status"] == "taken_down"


def test_overturn_restores_the_listing_and_relabels_the_example_with_the_lineage_kept(
    listing, moderator, reviewer, frozen_clock
):
    old = Decision.objects.get(image__listing=listing)
    example = TrainingExample.objects.get(decision=old)
    assert example.label == "weapon"
    assert TrainingState.objects.get().confirmed_since_last_run == 1
    appeal = file(listing).appeal
    frozen_clock.advance(days=3)
    appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome="overturn", note="A toy, not a weapon.")

    old.refresh_from_db()
    assert old.overturned_at == old.undone_at == frozen_clock.current
    new = Decision.objects.get(overturns=old)
    assert (new.moderator, new.outcome, new.appeal, new.note) == (reviewer, "reject", appeal, "A toy, not a weapon.")
    assert new.policy_category == PolicyCategory.NONE and new.undone_at is None
    assert new.image.status == ImageStatus.REJECTED and new.image.confirmed_at is None
    listing.refresh_from_db()
    assert listing.status == ListingStatus.LIVE
    appeal.refresh_from_db()
    assert appeal.status == AppealStatus.OVERTURNED and appeal.decided_by == reviewer

    example.refresh_from_db()
    assert (example.label, example.decision, example.active) == ("allowed", new, True)
    assert example.decision.overturns.moderator == moderator
    assert example.decision.appeal.note == "A toy, not a weapon."
    assert TrainingExample.objects.filter(sha256=example.sha256).count() == 1
    # The overturned confirmation no longer counts towards the next retrain's batch.
    assert TrainingState.objects.get().confirmed_since_last_run == 0


def test_overturn_writes_its_events_in_order(listing, reviewer):
    appeal = file(listing).appeal
    before = Listing.objects.get(pk=listing.pk).event_sequence
    appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome="overturn", note="Allowed.")
    written = [event for event in events_of(listing) if event.sequence > before]
    assert [event.type for event in written] == [
        EventType.IMAGE_DECIDED,
        EventType.LISTING_STATUS_CHANGED,
        EventType.APPEAL_DECIDED,
    ]
    assert [event.sequence for event in written] == [before + 1, before + 2, before + 3]
    decided, changed, concluded = (event.data for event in written)
    assert decided["outcome"] == "reject" and decided["via_appeal"] is True
    assert changed == {"from": "taken_down", "to": "live"}
    assert concluded["status"] == "overturned" and concluded["listing_status"] == "live"
    assert concluded["restored_image_ids"] == [decided["image_id"]]


def test_overturn_of_a_listing_with_two_confirmations_restores_both(moderator, reviewer, media_root, active_model):
    listing = taken_down_listing(moderator=moderator, images=2)
    appeal = file(listing).appeal
    appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome="overturn", note="Both fine.")
    assert Listing.objects.get(pk=listing.pk).status == ListingStatus.LIVE
    assert Decision.objects.filter(appeal=appeal, outcome="reject").count() == 2
    assert not Decision.objects.filter(image__listing=listing, outcome="confirm", undone_at__isnull=True).exists()


def test_after_an_overturn_there_is_nothing_left_to_appeal(listing, reviewer):
    appeal = file(listing).appeal
    appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome="overturn", note="Fine.")
    with pytest.raises(appeals.NothingToAppeal):
        file(listing, text="again")


def test_the_moderator_who_decided_cannot_decide_the_appeal(listing, moderator):
    appeal = file(listing).appeal
    with pytest.raises(appeals.NotAllowedToDecide) as raised:
        appeals.decide_appeal(appeal_id=appeal.pk, user=moderator, outcome="overturn", note="I was wrong.")
    assert raised.value.code == "not_allowed"
    assert Appeal.objects.get().status == AppealStatus.OPEN
    assert Listing.objects.get(pk=listing.pk).status == ListingStatus.TAKEN_DOWN


def test_only_moderators_and_admins_decide(listing):
    appeal = file(listing).appeal
    with pytest.raises(appeals.NotAllowedToDecide):
        appeals.decide_appeal(appeal_id=appeal.pk, user=make_user("seller"), outcome="uphold", note="No.")


def test_a_decided_appeal_cannot_be_decided_again(listing, reviewer):
    appeal = file(listing).appeal
    appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome="uphold", note="Stands.")
    with pytest.raises(appeals.AppealAlreadyDecided) as raised:
        appeals.decide_appeal(appeal_id=appeal.pk, user=make_moderator(), outcome="overturn", note="Hmm.")
    assert raised.value.code == "already_decided"
    assert Appeal.objects.get().status == AppealStatus.UPHELD
    assert len(events_of(listing, EventType.APPEAL_DECIDED)) == 1


@pytest.mark.parametrize(("outcome", "note"), [("overturn", ""), ("overturn", "  "), ("maybe", "Why not.")])
def test_a_decision_needs_a_known_outcome_and_a_note(listing, reviewer, outcome, note):
    appeal = file(listing).appeal
    with pytest.raises(appeals.InvalidAppeal):
        appeals.decide_appeal(appeal_id=appeal.pk, user=reviewer, outcome=outcome, note=note)
    assert Appeal.objects.get().status == AppealStatus.OPEN
