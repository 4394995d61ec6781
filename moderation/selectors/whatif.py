"""What the two thresholds would do, for the active model, at every threshold from 0 to 1 (the settings page's plot).

Four curves on a grid of 101 thresholds:

- queue volume per day: scored images of the last `DAYS` days at or above a review threshold and below the
  auto-action threshold in force, per day;
- auto-action volume per day: those at or above an auto-action threshold;
- precision and recall of "at or above the threshold", twice: on the active model's own holdout scores (what the
  thresholds were derived from) and on the past decisions with the score they were decided at, each audit
  decision weighted 1 / the probability it was drawn with (as the threshold preview does). The two are kept
  apart, not pooled: the holdout is made of decisions too, scored by another model at the time.

The curves are counted in 1% score buckets by the database (scores) or from the version's stored holdout, so the
cost does not grow with the stream beyond one grouped query over `DAYS` days; today's numbers (the table under the
plot) are counted at the exact thresholds in force.
"""

from datetime import timedelta

from django.db.models import Count, FloatField, IntegerField, Q, Sum
from django.db.models.functions import Cast, Floor, Least

from moderation import clock
from moderation.models import DecisionOutcome, ListingImage, ModelVersion, ModerationSettings
from moderation.selectors.training import decision_weight, measured_decisions

DAYS = 7
BUCKETS = 100
GRID = [i / BUCKETS for i in range(BUCKETS + 1)]


def _bucket(field: str):
    return Cast(Least(Floor(Cast(field, FloatField()) * BUCKETS), BUCKETS), IntegerField())


def _at_or_above(counts: dict[int, float]) -> list[float]:
    """Per grid threshold i/100, the sum of the buckets >= i (a score s sits in bucket floor(100 s))."""
    out, running = [0.0] * (BUCKETS + 1), 0.0
    for index in range(BUCKETS, -1, -1):
        running += counts.get(index, 0.0)
        out[index] = running
    return out


def _rates(positive: dict[int, float], everything: dict[int, float]) -> tuple[list, list]:
    pos, total = _at_or_above(positive), _at_or_above(everything)
    all_positive = pos[0]
    precision = [p / t if t else None for p, t in zip(pos, total, strict=True)]
    recall = [p / all_positive if all_positive else None for p in pos]
    return precision, recall


def _holdout_rows(version: ModelVersion, label: str) -> list[tuple[float, bool, float]]:
    from moderation.services.thresholds import version_label_view

    view = version_label_view(version, label)
    return list(zip(*view, strict=True)) if view else []


def _holdout_buckets(rows: list[tuple[float, bool, float]]) -> tuple[dict, dict]:
    pos, total = {}, {}
    for score, is_positive, weight in rows:
        index = min(BUCKETS, int(score * BUCKETS))
        total[index] = total.get(index, 0.0) + weight
        if is_positive:
            pos[index] = pos.get(index, 0.0) + weight
    return pos, total


def _holdout_at(rows, threshold: float | None) -> tuple[float | None, float | None]:
    """Exact holdout precision and recall of "at or above `threshold`" (not the grid's 1% buckets)."""
    if threshold is None or not rows:
        return None, None
    above = [(is_positive, weight) for score, is_positive, weight in rows if score >= threshold]
    total = sum(weight for _, weight in above)
    hits = sum(weight for is_positive, weight in above if is_positive)
    positives = sum(weight for _, is_positive, weight in rows if is_positive)
    return (hits / total if total else None), (hits / positives if positives else None)


def _decision_buckets(label: str, audit_rate: float) -> tuple[dict, dict]:
    rows = measured_decisions().filter(image__prohibited_label=label)
    grouped = (
        rows.annotate(bucket=_bucket("prohibited_probability"))
        .values("bucket", "outcome")
        .annotate(weight=Sum(decision_weight(audit_rate)))
    )
    pos, total = {}, {}
    for row in grouped:
        total[row["bucket"]] = total.get(row["bucket"], 0.0) + row["weight"]
        if row["outcome"] == DecisionOutcome.CONFIRM:
            pos[row["bucket"]] = pos.get(row["bucket"], 0.0) + row["weight"]
    return pos, total


def _decisions_at(label: str, threshold: float | None, audit_rate: float) -> tuple[float | None, float | None]:
    """Weighted precision and recall of "at or above `threshold`" on the label's measured decisions, exactly."""
    if threshold is None:
        return None, None
    weight = decision_weight(audit_rate)
    confirmed, above = Q(outcome=DecisionOutcome.CONFIRM), Q(prohibited_probability__gte=threshold)
    sums = (
        measured_decisions()
        .filter(image__prohibited_label=label)
        .aggregate(
            above=Sum(weight, filter=above, default=0.0),
            hits=Sum(weight, filter=above & confirmed, default=0.0),
            confirmed=Sum(weight, filter=confirmed, default=0.0),
        )
    )
    precision = sums["hits"] / sums["above"] if sums["above"] else None
    return precision, (sums["hits"] / sums["confirmed"] if sums["confirmed"] else None)


def _recent(label: str):
    since = clock.now() - timedelta(days=DAYS)
    return ListingImage.objects.filter(
        scored_at__gte=since, prohibited_label=label, prohibited_probability__isnull=False
    )


def _per_day(label: str, low: float, high: float | None) -> float:
    """Scored images of the last `DAYS` days at or above `low` and below `high`, per day."""
    images = _recent(label).filter(prohibited_probability__gte=low)
    if high is not None:
        images = images.filter(prohibited_probability__lt=high)
    return images.count() / DAYS


def _daily_buckets(label: str) -> dict[int, float]:
    grouped = _recent(label).annotate(bucket=_bucket("prohibited_probability")).values("bucket").annotate(n=Count("id"))
    return {row["bucket"]: row["n"] / DAYS for row in grouped}


def whatif(*, version: ModelVersion, label: str, settings_row: ModerationSettings) -> dict:
    """The four curves for one prohibited label of the active model, with both thresholds in force."""
    review = settings_row.threshold_for(label)
    auto = settings_row.auto_threshold_for(label)
    per_day = _at_or_above(_daily_buckets(label))
    auto_index = None if auto is None else min(BUCKETS, int(round(auto * BUCKETS)))
    below_auto = per_day[auto_index] if auto_index is not None else 0.0
    queue = [max(0.0, value - below_auto) for value in per_day]
    holdout = _holdout_rows(version, label)
    holdout_precision, holdout_recall = _rates(*_holdout_buckets(holdout))
    decision_precision, decision_recall = _rates(*_decision_buckets(label, settings_row.audit_rate))
    hold_review, hold_recall = _holdout_at(holdout, review)
    hold_auto, _ = _holdout_at(holdout, auto)
    decision_review, decision_recall_review = _decisions_at(label, review, settings_row.audit_rate)
    decision_auto, _ = _decisions_at(label, auto, settings_row.audit_rate)
    # Today's numbers at the exact thresholds, not at the grid's nearest point.
    today = {
        "queue_per_day": _per_day(label, review, auto),
        "auto_per_day": _per_day(label, auto, None) if auto is not None else 0.0,
        "holdout_precision_review": hold_review,
        "holdout_recall_review": hold_recall,
        "holdout_precision_auto": hold_auto,
        "decision_precision_review": decision_review,
        "decision_recall_review": decision_recall_review,
        "decision_precision_auto": decision_auto,
    }
    return {
        "label": label,
        "version": version.version,
        "grid": GRID,
        "review": review,
        "auto": auto,
        "days": DAYS,
        "queue_per_day": queue,
        "auto_per_day": per_day,
        "holdout_precision": holdout_precision,
        "holdout_recall": holdout_recall,
        "decision_precision": decision_precision,
        "decision_recall": decision_recall,
        "today": today,
    }
