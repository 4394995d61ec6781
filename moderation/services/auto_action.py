"""Model auto-actions: a score at or above its label's auto-action threshold takes the photo down without review.

The takedown is an automated decision like a bank match's (no moderator, `automated`, an event, an audit entry,
the listing's status refreshed by the caller), citing instead the model version, its score and the threshold it
reached. It trains nothing: the model's own output is not evidence. A share `qa_rate` of them is drawn into the
QA queue, where a moderator's verdict measures the auto precision (`selectors.calibration.auto_precision`):

- confirmed: the takedown stands, and becomes a training example weighted 1 / the QA rate, since it stands for
  that many takedowns nobody looked at;
- overturned: the automated decision is stamped undone and overturned, the moderator's rejection replaces it
  (`overturns`), the photo goes back up, and the rejection trains the allowed side, weighted the same way.
"""

import random

from django.db import transaction

from moderation import clock
from moderation.models import AuditAction, Decision, DecisionOutcome, ImageStatus, ListingImage, PolicyCategory
from moderation.services import audit, banks, events
from moderation.services.automated import confirm_automatically
from moderation.services.labels import label_or_blank
from moderation.services.listings import refresh_listing_status
from moderation.services.training.trigger import record_decision


class QAError(Exception):
    """A QA verdict on something that is not a QA item waiting for one; views answer 409."""

    code = "conflict"


def policy_for_label(label: str) -> str:
    """The policy ground a label stands for: a label named like a policy category is that one, else prohibited item."""
    return label if label in PolicyCategory.values and label != PolicyCategory.NONE else PolicyCategory.PROHIBITED_ITEM


def over_auto_threshold(probabilities: dict[str, float], prohibited, settings_row) -> tuple[str, float] | None:
    """The prohibited label (and its threshold) whose auto-action threshold the score reaches, the likeliest first."""
    reached = []
    for label in prohibited:
        threshold = settings_row.auto_threshold_for(label)
        value = float(probabilities.get(label, 0.0))
        if threshold is not None and value >= threshold:
            reached.append((value, label, threshold))
    if not reached:
        return None
    _, label, threshold = max(reached)
    return label, threshold


def take_down(*, image: ListingImage, label: str, threshold: float, settings_row, rng=None) -> Decision:
    """Record the model's automated takedown of a routed photo (inside the write transaction; the caller refreshes
    the listing), drawn into the QA sample with probability `qa_rate`."""
    rate = settings_row.qa_rate
    sampled = rate > 0 and (rng or random.random)() < rate
    probability = image.prohibited_probability
    note = f"Model {image.model_version} scored {label} {probability:.4f}, at or above its auto-action threshold "
    note += f"{threshold:.4f}."
    return confirm_automatically(
        image=image,
        note=note,
        audit_after={
            "model_version": image.model_version,
            "score": probability,
            "auto_threshold": threshold,
            "qa_sampled": sampled,
        },
        policy_category=policy_for_label(label),
        label=label,
        prohibited_probability=probability,
        auto_threshold=threshold,
        qa_probability=rate,
        qa_sampled=sampled,
    )


def qa_verdict(*, user, decision_id: int, outcome: str, note: str = "") -> Decision:
    """A moderator's verdict on a QA item: confirm the automated takedown or overturn it; returns the live decision.

    One verdict per item: a second one (another moderator, a double submit) raises `QAError`.
    """
    if outcome not in DecisionOutcome.values:
        raise ValueError(f"Unknown outcome {outcome!r}.")
    with transaction.atomic():
        found = Decision.objects.filter(pk=decision_id).values_list("image_id", flat=True).first()
        if found is None:
            raise QAError(f"No decision {decision_id}.")
        image = ListingImage.objects.select_for_update().select_related("listing").get(pk=found)
        decision = Decision.objects.select_for_update().get(pk=decision_id)
        if not (decision.automated and decision.bank_entry_id is None and decision.qa_sampled):
            raise QAError(f"Decision {decision.pk} is not in the QA sample.")
        if decision.qa_outcome:
            raise QAError(f"Decision {decision.pk} already has a QA verdict.")
        if decision.undone_at is not None:
            raise QAError(f"Decision {decision.pk} no longer stands (overturned on appeal): nothing to check.")
        now = clock.now()
        decision.qa_outcome, decision.qa_by, decision.qa_at = outcome, user, now
        live = decision
        if outcome == DecisionOutcome.CONFIRM:
            decision.save(update_fields=["qa_outcome", "qa_by", "qa_at"])
            record_decision(decision=decision)
        else:
            decision.undone_at = decision.overturned_at = now
            decision.save(update_fields=["qa_outcome", "qa_by", "qa_at", "undone_at", "overturned_at"])
            live = _overturn(decision=decision, image=image, user=user, note=note, now=now)
        audit.record(
            action=AuditAction.DECISION_QA,
            obj=decision,
            actor=user,
            before={"outcome": DecisionOutcome.CONFIRM, "automated": True},
            after={"qa_outcome": outcome, **({"overturned_by": live.pk} if live is not decision else {})},
            note=note,
        )
        return live


def _overturn(*, decision: Decision, image: ListingImage, user, note: str, now) -> Decision:
    new = Decision.objects.create_at(
        now,
        image=image,
        moderator=user,
        outcome=DecisionOutcome.REJECT,
        policy_category=PolicyCategory.NONE,
        label=label_or_blank(outcome=DecisionOutcome.REJECT, flagged_label=image.prohibited_label),
        note=note or "Automated takedown overturned in QA.",
        model_version=decision.model_version,
        prohibited_probability=decision.prohibited_probability,
        qa_outcome=DecisionOutcome.REJECT,
        qa_probability=decision.qa_probability,
        overturns=decision,
    )
    image.status, image.rejected_at, image.confirmed_at = ImageStatus.REJECTED, now, None
    image.save(update_fields=["status", "rejected_at", "confirmed_at"])
    events.image_decided(decision=new)
    refresh_listing_status(image.listing_id)
    record_decision(decision=new)
    banks.bank_decision(decision=new)
    return new
