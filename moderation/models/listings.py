"""Listings as the marketplace sent them, their photos and what each model version said about each photo."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ListingStatus(models.TextChoices):
    """Where a listing stands, derived from its images (`services.listings.derive_listing_status`).

    Taken down as soon as one image is confirmed prohibited; otherwise needs attention while any image could not be
    scored (a moderator retries it or sends it to human review: nothing moves it on by itself); pending while any
    image waits for a score; in review while any is flagged; live once every image is cleared or rejected as a false
    positive; withdrawn once the marketplace took it off its site (`DELETE /api/v1/listings/{id}`), whatever its
    images say.
    """

    PENDING = "pending", "Being scored"
    NEEDS_ATTENTION = "needs_attention", "Needs attention (an image could not be scored)"
    IN_REVIEW = "in_review", "In review"
    LIVE = "live", "Live"
    TAKEN_DOWN = "taken_down", "Taken down"
    WITHDRAWN = "withdrawn", "Withdrawn by the marketplace"


class Listing(models.Model):
    """A marketplace listing as its client sent it. Its status is derived from its images' statuses.

    `external_id` is the client's own id, unique per client. `content_sha256` fingerprints the photos it was created
    with, so a client retrying a create after a timeout gets the same listing back instead of an error.
    """

    client = models.ForeignKey("Client", on_delete=models.PROTECT, related_name="listings")
    external_id = models.CharField(max_length=200)
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=ListingStatus.choices, default=ListingStatus.PENDING)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="listings"
    )
    content_sha256 = models.CharField(max_length=64, blank=True)
    event_sequence = models.PositiveBigIntegerField(default=0, help_text="Sequence number of its latest event.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["client", "external_id"], name="one_listing_per_client_external_id")
        ]
        indexes = [models.Index(fields=["client", "-created_at", "-id"], name="client_listing_page_idx")]

    def __str__(self):
        return f"{self.external_id}: {self.title}"


class ImageStatus(models.TextChoices):
    """Where one image stands in the pipeline; each state has its own `<status>_at` stamp.

    Pending: stored, waiting for a score. Cleared: scored below its label's threshold and not sampled for audit.
    Flagged: in the review queue, above the threshold or as an audit sample (or sent there by a moderator after
    scoring failed on it, `sent_to_review_at`). Confirmed and rejected: a moderator's verdict (prohibited, or a false
    positive). Failed: scoring gave up after the allowed attempts, so the listing needs attention instead of going
    live unscored, until a moderator retries it or sends it to review. Invalid: not a usable image; uploads are
    checked before they are stored, so the pipeline itself does not set it. Withdrawn: its listing was withdrawn
    before it was decided.
    """

    PENDING = "pending", "Waiting for a score"
    CLEARED = "cleared", "Cleared"
    FLAGGED = "flagged", "Flagged for review"
    CONFIRMED = "confirmed", "Confirmed prohibited"
    REJECTED = "rejected", "Rejected (false positive)"
    INVALID = "invalid", "Invalid image"
    FAILED = "failed", "Scoring failed"
    WITHDRAWN = "withdrawn", "Withdrawn with its listing"


class ListingImage(models.Model):
    """One photo of a listing and where it stands in the moderation pipeline.

    `prohibited_probability` and `model_version` mirror the current score so the queue can be ordered by an
    index instead of a join. The claim fields implement a lease: a claim is valid while `claim_expires_at` is in
    the future, so a moderator who closes the tab never blocks an item for long.

    The scoring lease does the same for workers: no row lock is held while the model runs, so the task that
    claimed an image names itself in `scoring_lease_key` until it has written the score (or its lease expires,
    after the task's time limit), and other tasks leave the image alone meanwhile. `deferrals` and
    `next_attempt_at` are the backoff of attempts given back after infrastructure errors.

    The PDQ fields are filled by the worker beside the forward pass (`services.matching`); `duplicate_of` makes
    flagged near-duplicates one queue entry: the group's lead has none, its members point at it.
    """

    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="images/%Y/%m/%d/", max_length=300)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveIntegerField(default=0)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    image_format = models.CharField(max_length=10, blank=True)
    status = models.CharField(max_length=20, choices=ImageStatus.choices, default=ImageStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    deferrals = models.PositiveIntegerField(
        default=0, help_text="Attempts given back after infrastructure errors since the last score."
    )
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="After an infrastructure error: not scored again before this time."
    )
    scoring_lease_key = models.CharField(max_length=64, blank=True)
    scoring_lease_expires_at = models.DateTimeField(null=True, blank=True)
    sent_to_review_at = models.DateTimeField(
        null=True, blank=True, help_text="When a moderator sent it to human review after scoring failed on it."
    )
    prohibited_probability = models.FloatField(null=True, blank=True)
    prohibited_label = models.CharField(max_length=100, blank=True)
    model_version = models.CharField(max_length=50, blank=True)
    is_audit = models.BooleanField(default=False, help_text="Sent to review as a random sample below the threshold.")
    audit_probability = models.FloatField(
        null=True,
        blank=True,
        help_text="Probability it was sent to review when last routed: 1 at or above the threshold, its audit "
        "sampling probability below. Its inverse is the image's weight as a training and holdout example.",
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="claims"
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    pdq_hash = models.CharField(max_length=64, blank=True, help_text="PDQ hash (hex), made by the scoring worker.")
    pdq_quality = models.PositiveSmallIntegerField(null=True, blank=True)
    pdq_dihedral = models.CharField(
        max_length=512, blank=True, help_text="The hashes of its 8 rotations and mirror images, joined."
    )
    pdq_centre = models.CharField(
        max_length=512,
        blank=True,
        help_text="The hashes of its centre (borders cut, where captions go) and of its 7 rotations and mirror "
        "images, joined; looked up beside the photo's own.",
    )
    pdq_centre_quality = models.PositiveSmallIntegerField(null=True, blank=True)
    duplicate_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="duplicates",
        help_text="While flagged: the queue entry of its near-duplicate group it is shown under.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    flagged_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    invalid_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The queue lists one entry per near-duplicate group: the leads, in review order.
            models.Index(
                fields=["-prohibited_probability", "created_at", "id"],
                name="queue_lead_order_idx",
                condition=Q(status="flagged", duplicate_of__isnull=True),
            ),
            models.Index(fields=["status", "enqueued_at"], name="image_status_idx"),
            # The queue page's counters read these instead of scanning every open item: the oldest flag time is
            # the first entry of one, and audit samples (a few percent of the queue) are all of the other.
            models.Index(fields=["flagged_at"], name="flagged_age_idx", condition=Q(status="flagged")),
            models.Index(fields=["id"], name="flagged_audit_idx", condition=Q(status="flagged", is_audit=True)),
        ]

    def __str__(self):
        return f"image {self.pk} of {self.listing_id} ({self.status})"


class Score(models.Model):
    """What one model version said about one image. Written idempotently: one row per image and version."""

    image = models.ForeignKey(ListingImage, on_delete=models.CASCADE, related_name="scores")
    model_version = models.CharField(max_length=50)
    probabilities = models.JSONField()
    prohibited_probability = models.FloatField()
    prohibited_label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["image", "model_version"], name="one_score_per_version")]

    def __str__(self):
        return f"{self.model_version}: {self.prohibited_probability:.3f} for image {self.image_id}"
