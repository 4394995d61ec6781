"""What a model's thresholds do to a scored test stream, and the baselines' figures at the loop's review budget.

Moderators in the benchmark decide by the true labels, so whatever reaches review is actioned correctly: an
operating point that sends more photos to people always looks better on actioned recall. The never-retrained
model keeps the first threshold (0.5) and sends about three times as many photos to review as the loop does, so
its actioned F1 there says what a bigger review budget buys, not what the model learnt. `at_budget` holds the
human effort equal: each baseline gets exactly as many test photos, its highest-scoring ones, as the loop sends to
review or takes down on its own, and moderators confirm the violations among them. That gives the baselines as
many decisions as the loop's review plus its auto-actions, more than the loop's moderators spend, so the
comparison errs on the baselines' side. It chooses no setting of the desk: the budget is the loop's, and the test
stream is only scored.
"""

from collections.abc import Sequence


def _f1(precision: float, recall: float) -> float:
    return round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0


def figures(
    scores: Sequence[float], truths: Sequence[bool], ood: Sequence[bool], review: float, auto: float | None
) -> dict:
    """What two thresholds do to a scored test stream, moderators deciding the review band by the true labels.

    Actioned: auto-actions plus the violations confirmed in review. `precision` and `recall` are the queue's at
    the review threshold, as the benchmark reported before auto-action existed. `to_people_or_auto` counts the
    photos at or above the review threshold: the budget `at_budget` gives the baselines.
    """
    positives = sum(truths) or 1
    auto_hit = [auto is not None and score >= auto for score in scores]
    in_review = [not hit and score >= review for score, hit in zip(scores, auto_hit, strict=True)]
    flagged = [score >= review for score in scores]
    tp_auto = sum(hit and truth for hit, truth in zip(auto_hit, truths, strict=True))
    tp_review = sum(hit and truth for hit, truth in zip(in_review, truths, strict=True))
    tp_flagged = sum(hit and truth for hit, truth in zip(flagged, truths, strict=True))
    actioned = sum(auto_hit) + tp_review
    precision = (tp_auto + tp_review) / actioned if actioned else 0.0
    recall = (tp_auto + tp_review) / positives
    return {
        "precision": round(tp_flagged / sum(flagged), 4) if any(flagged) else 0.0,
        "recall": round(tp_flagged / positives, 4),
        "actioned_precision": round(precision, 4),
        "actioned_recall": round(recall, 4),
        "actioned_f1": _f1(precision, recall),
        "auto_precision": round(tp_auto / sum(auto_hit), 4) if any(auto_hit) else None,
        "auto_share": round(tp_auto / positives, 4),
        "review_share": round(sum(in_review) / len(scores), 4) if scores else 0.0,
        "ood_auto_actioned": sum(hit and other for hit, other in zip(auto_hit, ood, strict=True)),
        "to_people_or_auto": sum(flagged),
    }


def at_budget(scores: Sequence[float], truths: Sequence[bool], budget: int) -> dict:
    """A model given `budget` review slots on the test stream: its `budget` highest-scoring photos go to people,
    who confirm the violations among them (ties in score broken by stream order, so the count is exact).

    `budget_precision` is the share of those photos that are violations (the queue's precision at that budget);
    the actioned figures are what the review confirms: precision 1 whenever anything is caught.
    """
    positives = sum(truths) or 1
    ranked = sorted(range(len(scores)), key=lambda index: (-scores[index], index))[: max(0, budget)]
    caught = sum(1 for index in ranked if truths[index])
    recall = caught / positives
    precision = 1.0 if caught else 0.0
    return {
        "budget": len(ranked),
        "budget_precision": round(caught / len(ranked), 4) if ranked else 0.0,
        "budget_actioned_recall": round(recall, 4),
        "budget_actioned_f1": _f1(precision, recall),
    }
