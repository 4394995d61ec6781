"""What a moderator does with an image scoring gave up on: score it again, or send it to human review.

`failed` is where scoring stops (a decode error, or a process that died on the image `max_scoring_attempts`
times). Nothing retries a failed image by itself: a poison image would kill workers in a loop. A person decides,
on the Needs attention page, in one action:

- Retry: the attempts start again and the image is queued for scoring through the outbox, e.g. after a bug fix, a
  new model, or a cause that is gone.
- Send to human review: the image is flagged for a moderator without a model score, and `sent_to_review_at` lets
  the queue and the item page say why; no model scores it again (a re-score after an activation skips it).

Both lock the image and refuse one that is no longer failed (a second click, another moderator first), emit an
event for the marketplace (`image.retried` or `image.sent_to_review`, then `listing.status_changed`), and are
recorded in the audit trail.
"""

from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from moderation import clock
from moderation.models import AuditAction, ImageStatus, ListingImage
from moderation.services import audit, events
from moderation.services.listings import refresh_listing_status
from moderation.services.queueing import queue_scoring

#: What an audit entry keeps of the image before and after.
AUDITED_FIELDS = ("status", "attempts", "last_error", "failed_at", "sent_to_review_at")


class NotFailed(Exception):
    """The image is not (or no longer) failed: someone acted on it already. Views answer 409."""

    code = "not_failed"


def _snapshot(image: ListingImage) -> dict:
    values = {name: getattr(image, name) for name in AUDITED_FIELDS}
    return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in values.items()}


def _audit(*, action: str, image: ListingImage, before: dict, user: AbstractBaseUser) -> None:
    """Record the action in the audit trail, inside the action's transaction."""
    audit.record(action=action, obj=image, actor=user, before=before, after=_snapshot(image))


def _locked_failed(image_id: int) -> ListingImage:
    image = ListingImage.objects.select_for_update(of=("self",)).select_related("listing").get(pk=image_id)
    if image.status != ImageStatus.FAILED:
        raise NotFailed(f"Image {image.pk} is {image.get_status_display().lower()}, not failed.")
    return image


def retry_image(*, image_id: int, user: AbstractBaseUser) -> ListingImage:
    """Score a failed image again from its first attempt; its listing is pending meanwhile.

    The last error is kept until a score replaces it, so the listing page still says what went wrong before.
    Raises `ListingImage.DoesNotExist` or `NotFailed`.
    """
    with transaction.atomic():
        image = _locked_failed(image_id)
        before = _snapshot(image)
        image.status = ImageStatus.PENDING
        image.attempts, image.deferrals, image.next_attempt_at = 0, 0, None
        image.scoring_lease_key, image.scoring_lease_expires_at = "", None
        image.enqueued_at = clock.now()
        image.save(
            update_fields=[
                "status",
                "attempts",
                "deferrals",
                "next_attempt_at",
                "scoring_lease_key",
                "scoring_lease_expires_at",
                "enqueued_at",
            ]
        )
        events.failed_image_handled(image=image, moderator_id=user.pk, sent_to_review=False)
        refresh_listing_status(image.listing_id)
        queue_scoring(image_ids=[image.pk])
        _audit(action=AuditAction.IMAGE_RETRIED, image=image, before=before, user=user)
    return image


def send_to_review(*, image_id: int, user: AbstractBaseUser) -> ListingImage:
    """Flag a failed image for a moderator without a model score, marked so the queue says why.

    It weighs 1 as a training example (it was not an audit draw), like any image a moderator was bound to see.
    Raises `ListingImage.DoesNotExist` or `NotFailed`.
    """
    with transaction.atomic():
        image = _locked_failed(image_id)
        before = _snapshot(image)
        now = clock.now()
        image.status = ImageStatus.FLAGGED
        image.flagged_at = image.sent_to_review_at = now
        image.next_attempt_at = None
        image.is_audit, image.audit_probability = False, None
        image.claimed_by, image.claim_expires_at = None, None
        image.save(
            update_fields=[
                "status",
                "flagged_at",
                "sent_to_review_at",
                "next_attempt_at",
                "is_audit",
                "audit_probability",
                "claimed_by",
                "claim_expires_at",
            ]
        )
        events.failed_image_handled(image=image, moderator_id=user.pk, sent_to_review=True)
        refresh_listing_status(image.listing_id)
        _audit(action=AuditAction.IMAGE_SENT_TO_REVIEW, image=image, before=before, user=user)
    return image
