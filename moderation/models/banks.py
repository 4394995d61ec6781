"""Hash banks: PDQ hashes of photos already decided, so a copy is decided once, not reviewed again from scratch.

A bank holds entries (a 256-bit PDQ hash, its quality when known, a label, and where it came from: the decision that
put it there, or an import). A decision adds its photo, two centred crops of it and its centre (`derived`): PDQ does not
follow cropping, and trimming the borders is a seller's easiest disguise; writing a caption across them is the next
(an upload's centre is looked up beside the upload itself). The `confirmed` bank is filled by confirmations,
the `cleared` bank by rejections (false positives); imported banks come from hash files, such as a hash-sharing
programme's export. Each bank says how close a photo must be to count as a copy, which hashes are too poor to trust,
and what a match does.

Entries are never deleted: removing one stamps it, so the history of what a bank held, and of every automated
decision citing an entry, stays readable. Every change to banks or entries bumps `BankState.version` under its row
lock, in the change's transaction, and stamps the entry with that version, so a scoring worker that has read
version v knows every change up to v has committed and loads exactly the changes past the version it holds.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

#: HMA's defaults: a match within 31 bits of 256, hashes of quality 49 or less never match.
DEFAULT_MATCH_DISTANCE = 31
DEFAULT_QUALITY_FLOOR = 49
MAX_MATCH_DISTANCE = 63


class BankKind(models.TextChoices):
    """Where a bank's entries come from."""

    CONFIRMED = "confirmed", "Confirmed decisions"
    CLEARED = "cleared", "Rejected decisions (false positives)"
    IMPORTED = "imported", "Imported hashes"


class BankAction(models.TextChoices):
    """What a match does to the new photo."""

    TAKE_DOWN = "take_down", "Take down at once (an automated decision)"
    REVIEW = "review", "Send to review with the match shown"
    CLEAR = "clear", "Clear without review"


#: When several banks match one photo, the strongest action wins.
ACTION_STRENGTH = {BankAction.TAKE_DOWN: 3, BankAction.REVIEW: 2, BankAction.CLEAR: 1}


class HashBank(models.Model):
    """A set of known hashes and the rule for matching them: enabled, match distance, quality floor, action."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=BankKind.choices)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    action = models.CharField(max_length=20, choices=BankAction.choices, default=BankAction.REVIEW)
    match_distance = models.PositiveSmallIntegerField(
        default=DEFAULT_MATCH_DISTANCE,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_MATCH_DISTANCE)],
        help_text="A photo within this many bits (of 256) of an entry matches it.",
    )
    quality_floor = models.PositiveSmallIntegerField(
        default=DEFAULT_QUALITY_FLOOR,
        validators=[MaxValueValidator(100)],
        help_text="A photo or entry whose PDQ quality is at or under this never matches (flat or tiny images).",
    )
    labels = models.JSONField(default=list, blank=True, help_text="Labels an imported line may carry.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(kind__in=["confirmed", "cleared"]), name="one_bank_per_decision_kind"
            )
        ]

    def __str__(self):
        return self.name


class BankEntry(models.Model):
    """One hash in a bank, with the decision (and image) it came from, or the import line's label."""

    bank = models.ForeignKey(HashBank, on_delete=models.PROTECT, related_name="entries")
    pdq_hash = models.CharField(max_length=64)
    quality = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Unknown for imported hashes.")
    label = models.CharField(max_length=100, blank=True)
    derived = models.CharField(
        max_length=20, blank=True, help_text='Empty for the photo itself; "crop_5" for its centred crop 5% a side.'
    )
    source_decision = models.ForeignKey(
        "Decision", null=True, blank=True, on_delete=models.PROTECT, related_name="bank_entries"
    )
    source_image = models.ForeignKey(
        "ListingImage", null=True, blank=True, on_delete=models.SET_NULL, related_name="bank_entries"
    )
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    version = models.PositiveBigIntegerField(help_text="The banks' version that added it.")
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    removal_reason = models.TextField(blank=True)
    removed_version = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "bank entries"
        constraints = [
            models.UniqueConstraint(
                fields=["bank", "pdq_hash"], condition=Q(removed_at__isnull=True), name="one_live_entry_per_hash"
            )
        ]
        indexes = [
            models.Index(fields=["version"], name="bank_entry_version_idx"),
            models.Index(fields=["removed_version"], name="bank_entry_removed_idx"),
            models.Index(fields=["source_decision"], name="bank_entry_decision_idx"),
        ]

    def __str__(self):
        return f"{self.bank_id}:{self.pdq_hash[:16]}"


class BankState(models.Model):
    """The single row (pk=1) whose version every bank change bumps; workers reload what changed past theirs."""

    version = models.PositiveBigIntegerField(default=0)
    retroactive_version = models.PositiveBigIntegerField(
        default=0, help_text="Take-down entries up to this version were matched against the live images."
    )

    def __str__(self):
        return f"banks at version {self.version}"


class ImageMatch(models.Model):
    """A photo matched a bank entry at intake (or when the entry was added): the distance and what was done."""

    image = models.ForeignKey("ListingImage", on_delete=models.CASCADE, related_name="matches")
    entry = models.ForeignKey(BankEntry, on_delete=models.PROTECT, related_name="matches")
    bank = models.ForeignKey(HashBank, on_delete=models.PROTECT, related_name="matches")
    distance = models.PositiveSmallIntegerField()
    variant = models.PositiveSmallIntegerField(
        default=0,
        help_text="Which of the photo's lookups matched: 0 as it is, 1-7 rotated or mirrored, 8-15 its centre "
        "(8 as it is).",
    )
    action = models.CharField(max_length=20, choices=BankAction.choices)
    applied = models.BooleanField(default=True, help_text="False when a stronger match decided the photo instead.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["distance", "id"]
        constraints = [models.UniqueConstraint(fields=["image", "entry"], name="one_match_per_image_entry")]

    def __str__(self):
        return f"image {self.image_id} ~ entry {self.entry_id} at {self.distance}"

    @property
    def how(self) -> str:
        """How the photo matched, in words for the item page ("" when as it is)."""
        turned = "rotated or mirrored" if self.variant % 8 else ""
        if self.variant >= 8:
            return f"its centre, {turned}" if turned else "its centre"
        return turned
