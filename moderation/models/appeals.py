"""Sellers' appeals of a taken-down listing, reviewed by someone other than the moderator who decided.

The EU DSA asks for an appeal route against every restriction; an appeal is the seller's statement (up to 5,000
characters), the confirmations it contests, and the reviewer's outcome with a note: upheld, or overturned, which
puts the listing back and relabels the training examples with the lineage kept.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

APPEAL_TEXT_LIMIT = 5000


class AppealStatus(models.TextChoices):
    """Open until a reviewer decides; upheld keeps the takedown, overturned reverses it."""

    OPEN = "open", "Open"
    UPHELD = "upheld", "Upheld (the takedown stands)"
    OVERTURNED = "overturned", "Overturned (the listing is restored)"


class Appeal(models.Model):
    """A seller's appeal of a listing's takedown: the confirmations it contests and the review's outcome."""

    listing = models.ForeignKey("Listing", on_delete=models.PROTECT, related_name="appeals")
    client = models.ForeignKey("Client", on_delete=models.PROTECT, related_name="appeals")
    text = models.TextField()
    contested = models.ManyToManyField("Decision", related_name="appeals", help_text="The confirmations appealed.")
    status = models.CharField(max_length=20, choices=AppealStatus.choices, default=AppealStatus.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="appeals_decided"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["created_at"], name="open_appeals_idx", condition=Q(status="open"))]

    def __str__(self):
        return f"appeal {self.pk} of listing {self.listing_id} ({self.status})"
