"""What every automated takedown records, whoever made it (a bank match or the model).

The photo is confirmed with no moderator: a `Decision` marked `automated`, stamped with the caller's clock, the
image taken out of the queue and its claims and group cleared, the `image.decided` event and a system audit entry.
The callers add what cites the cause (the bank entry, or the model's score and threshold) and refresh the listing.
"""

from moderation import clock
from moderation.models import AuditAction, Decision, DecisionOutcome, ImageStatus, ListingImage
from moderation.services import audit, events

#: The image fields an automated confirmation changes (with the route fields the scoring write already saved).
CONFIRMED_FIELDS = [
    "status",
    "flagged_at",
    "cleared_at",
    "confirmed_at",
    "is_audit",
    "audit_probability",
    "claimed_by",
    "claim_expires_at",
    "duplicate_of",
]


def confirm_automatically(*, image: ListingImage, note: str, audit_after: dict, **decision_fields) -> Decision:
    """Record an automated confirmation of `image` (inside the write transaction) and return its decision.

    `decision_fields` are the cause's own `Decision` fields (label, policy category, bank entry or threshold...);
    `audit_after` is what the audit entry adds to the image, outcome and `automated` flag.
    """
    now = clock.now()
    decision = Decision.objects.create_at(
        now,
        image=image,
        moderator=None,
        automated=True,
        outcome=DecisionOutcome.CONFIRM,
        note=note,
        model_version=image.model_version,
        was_audit=False,
        audit_probability=image.audit_probability,
        **decision_fields,
    )
    image.status, image.confirmed_at, image.is_audit = ImageStatus.CONFIRMED, now, False
    image.claimed_by, image.claim_expires_at, image.duplicate_of = None, None, None
    image.save(update_fields=CONFIRMED_FIELDS)
    events.image_decided(decision=decision)
    audit.record(
        action=AuditAction.DECISION_MADE,
        obj=decision,
        actor_name=audit.SYSTEM,
        after={"image": image.pk, "outcome": decision.outcome, "automated": True, **audit_after},
        note=note,
    )
    return decision
