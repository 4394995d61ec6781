"""What the audit sampler needs to know: how close to the threshold recent below-threshold images scored."""

from dataclasses import dataclass

from moderation.models import AuditSampling, ListingImage, ModerationSettings

#: Share of the audit budget spread uniformly over every image below the threshold when sampling by score; the
#: rest goes in proportion to how close each image scored to its threshold. The uniform half keeps every image's
#: probability at least half the audit rate, so no example weighs more than twice 1 / the rate.
UNIFORM_SHARE = 0.5
#: How many of the latest scored images estimate the typical closeness, and how many below the threshold are
#: needed before sampling by score starts (until then the sample is uniform).
RECENT_IMAGES = 500
MIN_RECENT_BELOW = 50


def closeness(probability: float | None, label: str, settings_row: ModerationSettings) -> float:
    """How close a score came to its label's threshold, from 0 (certainly allowed) up to 1 (at the threshold)."""
    threshold = settings_row.threshold_for(label)
    if probability is None or threshold <= 0:
        return 1.0
    return min(1.0, max(0.0, float(probability) / threshold))


@dataclass(frozen=True)
class AuditPlan:
    """The audit sampling probability of a below-threshold image, for one batch of routing decisions.

    Uniform sampling reviews every below-threshold image with probability `rate`. Sampling by score reviews an
    image with probability ``rate * (UNIFORM_SHARE + (1 - UNIFORM_SHARE) * closeness / mean_closeness)``: on
    average still `rate` (the mean is over recent images below the threshold), but the images just below the
    threshold, where the missed violations and the hardest allowed images are, are reviewed several times as often
    as the confidently allowed ones. Every audit decision then weighs 1 / its own probability, so weighted
    figures still estimate the whole stream, with less variance where the model's boundary is decided.
    """

    rate: float
    mean_closeness: float | None = None

    def probability(self, image_closeness: float) -> float:
        """Return the chance that an image this close to its threshold is sent to review as an audit sample."""
        if self.rate <= 0:
            return 0.0
        if not self.mean_closeness:
            return self.rate
        share = UNIFORM_SHARE + (1 - UNIFORM_SHARE) * image_closeness / self.mean_closeness
        return min(1.0, self.rate * share)


def audit_plan(settings_row: ModerationSettings) -> AuditPlan:
    """The plan for the current settings: uniform, or by score once enough recent images give the typical score.

    Reads the latest `RECENT_IMAGES` scored images by primary key (an index scan), so it costs one small query per
    scoring batch whatever the table's size.
    """
    if settings_row.audit_sampling != AuditSampling.BY_SCORE or settings_row.audit_rate <= 0:
        return AuditPlan(rate=settings_row.audit_rate)
    recent = (
        ListingImage.objects.filter(prohibited_probability__isnull=False)
        .order_by("-id")
        .values_list("prohibited_probability", "prohibited_label")[:RECENT_IMAGES]
    )
    below = [c for c in (closeness(p, label, settings_row) for p, label in recent) if c < 1.0]
    if len(below) < MIN_RECENT_BELOW or sum(below) <= 0:
        return AuditPlan(rate=settings_row.audit_rate)
    return AuditPlan(rate=settings_row.audit_rate, mean_closeness=sum(below) / len(below))
