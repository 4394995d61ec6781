"""Reads for the two thresholds: the QA queue of automated takedowns, and the auto precision QA has measured."""

from django.db.models import Q

from moderation.models import Decision, DecisionOutcome
from moderation.services.thresholds import wilson_lower_bound

#: Model auto-actions (automated, citing no bank entry).
MODEL_ACTIONS = Q(automated=True, bank_entry__isnull=True)


def qa_queue(limit: int = 100):
    """Automated takedowns drawn into the QA sample and still waiting for a moderator's verdict, oldest first."""
    return (
        Decision.objects.filter(MODEL_ACTIONS, qa_sampled=True, qa_outcome="", undone_at__isnull=True)
        .select_related("image", "image__listing")
        .order_by("created_at", "pk")[:limit]
    )


def auto_precision() -> list[dict]:
    """Per label and overall: the share of QA-verdicted automated takedowns that moderators confirmed.

    Each verdict weighs 1 / the QA rate its takedown was drawn with, so a rate changed midway still gives an
    estimate of all automated takedowns; the 95% lower bound is Wilson's on the effective count, as for the
    auto-action threshold itself. An overturned takedown counts against it.
    """
    verdicts = Decision.objects.filter(MODEL_ACTIONS, qa_sampled=True).exclude(qa_outcome="")
    rows = list(verdicts.values_list("label", "qa_outcome", "qa_probability"))
    taken = Decision.objects.filter(MODEL_ACTIONS)
    totals = {}
    for label in taken.values_list("label", flat=True):
        totals[label] = totals.get(label, 0) + 1
    by_label: dict[str, list] = {}
    for label, outcome, probability in rows:
        by_label.setdefault(label, []).append((outcome == DecisionOutcome.CONFIRM, _weight(probability)))
    result = [_summary(label, items, totals.get(label, 0)) for label, items in sorted(by_label.items())]
    result += [_summary(label, [], count) for label, count in sorted(totals.items()) if label not in by_label]
    if len(result) > 1:
        every = [item for items in by_label.values() for item in items]
        result.append(_summary("all", every, sum(totals.values())))
    return result


def _weight(probability: float | None) -> float:
    return 1.0 / probability if probability and 0 < probability < 1 else 1.0


def _summary(label: str, items: list[tuple[bool, float]], takedowns: int) -> dict:
    total = sum(weight for _, weight in items)
    confirmed = sum(weight for ok, weight in items if ok)
    squares = sum(weight * weight for _, weight in items)
    precision = confirmed / total if total else None
    effective = total * total / squares if squares else 0.0
    bound = wilson_lower_bound(precision * effective, effective) if precision is not None else None
    return {
        "label": label,
        "takedowns": takedowns,
        "verdicts": len(items),
        "overturned": sum(1 for ok, _ in items if not ok),
        "precision": precision,
        "lower_bound": bound,
    }
