"""Two thresholds per prohibited label, derived from the admin's targets on a weighted holdout (pure functions).

The auto-action threshold is the lowest score at which everything scoring at least that much is, by the holdout,
a violation with precision >= the precision target; not by the point estimate, which a few lucky examples reach,
but by the one-sided 95% Wilson lower bound. Holdout examples carry inverse-propensity weights (an audit item
stands for the unreviewed images like it), so the bound is taken on effective counts: Kish's effective sample
size n = (sum w)^2 / sum w^2 and the weighted precision. A heavy audit item among the high scores then costs
what it should, and a holdout of a few hundred examples can never claim 99%: with no false positive at all the
bound reaches 0.99 only from about 270 effective examples. When no score reaches the target, auto-action is off
for the label, with the reason.

The review threshold is the highest score that still catches the recall target's share of the holdout's
(weighted) violations; below it an image is cleared, with the audit sample. Should the precision target already
hold below it, the review threshold comes down to the auto-action threshold: nothing worth a person's time is left
between the two. It is derived only once the holdout holds enough violations for the target to leave room for a
miss (`min_violations_for_recall`: 20 effective violations at 0.95): on fewer, the only threshold meeting 0.95 is
the score of the lowest-scoring violation, an extreme value that a single odd photo drags to near zero (measured
on the learning-loop benchmark: 19 holdout violations put the threshold at 0.006 and three quarters of all
uploads into the queue). Until then the derivation gives no review threshold, with the reason, and recalibration
keeps the replaced model's share of the stream instead (`volume_matched`).
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

#: The one-sided 95% normal quantile.
Z_95 = 1.6448536269514722


def wilson_lower_bound(successes: float, n: float, z: float = Z_95) -> float:
    """The lower end of the Wilson score interval for a proportion (0 with no evidence)."""
    if n <= 0:
        return 0.0
    p = min(1.0, max(0.0, successes / n))
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


def min_violations_for_recall(recall_target: float) -> int:
    """The fewest (effective) holdout violations on which `recall_target` can be met with one of them missed."""
    if recall_target >= 1.0:
        return 1
    return math.ceil(1.0 / (1.0 - recall_target) - 1e-9)


@dataclass(frozen=True)
class Derived:
    """One label's thresholds as the holdout supports them, with the evidence behind each."""

    review: float | None
    auto: float | None
    auto_reason: str
    review_reason: str
    examples: int
    positives: float
    precision_at_auto: float | None = None
    precision_bound_at_auto: float | None = None
    effective_n_at_auto: float | None = None
    best_bound: float | None = None
    best_bound_at: float | None = None
    recall_at_review: float | None = None

    def as_dict(self) -> dict:
        """The JSON stored on the version's calibration and shown on the settings page."""
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}


Evidence = tuple[Sequence[float], Sequence[bool], Sequence[float]]


def _ordered(scores: Sequence[float], positive: Sequence[bool], weights: Sequence[float]) -> list[tuple]:
    return sorted(zip(scores, positive, weights, strict=True), key=lambda row: -row[0])


def _cumulative(rows: list[tuple]):
    """For each distinct score, highest first: the score, and the weight, squared weight and violations' weight of
    every example scoring at least that much (examples tied at a score are on the same side of a threshold there)."""
    weight_sum = weight_squares = positive_sum = 0.0
    index = 0
    while index < len(rows):
        threshold = rows[index][0]
        while index < len(rows) and rows[index][0] == threshold:
            _, is_positive, weight = rows[index]
            weight_sum += weight
            weight_squares += weight * weight
            positive_sum += weight if is_positive else 0.0
            index += 1
        yield threshold, weight_sum, weight_squares, positive_sum


def _review(rows: list[tuple], recall_target: float) -> tuple[float | None, float | None, str]:
    """The review threshold of ordered rows, the recall it catches, and why."""
    total_positive = sum(weight for _, is_positive, weight in rows if is_positive)
    if not rows:
        return None, None, "The holdout has no examples scored by this model."
    if total_positive <= 0:
        return None, None, "The holdout has no violations of this label."
    positive_weights = [weight for _, is_positive, weight in rows if is_positive]
    effective_violations = total_positive**2 / sum(weight * weight for weight in positive_weights)
    if effective_violations < min_violations_for_recall(recall_target) - 1e-9:
        return (
            None,
            None,
            (
                f"The holdout has {effective_violations:.0f} effective violations; recall {recall_target:.3f} needs at "
                f"least {min_violations_for_recall(recall_target)} before one may be missed (on fewer, only the "
                "lowest-scoring violation's score meets it)."
            ),
        )
    for threshold, _weight_sum, _squares, positive_sum in _cumulative(rows):
        recall = positive_sum / total_positive
        if recall >= recall_target - 1e-12:
            return threshold, recall, f"Catches {recall:.3f} of the holdout's violations (target {recall_target:.3f})."
    raise AssertionError("every violation is caught at the lowest score")  # pragma: no cover


def derive(
    *,
    scores: Sequence[float],
    positive: Sequence[bool],
    weights: Sequence[float],
    precision_target: float,
    recall_target: float,
    review_evidence: Evidence | None = None,
) -> Derived:
    """Both thresholds from scored holdout examples (`positive`: the example is a violation of the label).

    `review_evidence` (scores, positive, weights), when given, is what the review threshold is derived from
    instead; the auto-action threshold always comes from the main examples, and a review threshold above it comes
    down to it.
    """
    rows = _ordered(scores, positive, weights)
    total_positive = sum(weight for _, is_positive, weight in rows if is_positive)
    if not rows:
        reason = "The holdout has no examples scored by this model."
        return Derived(None, None, reason, reason, 0, 0.0)
    if total_positive <= 0:
        reason = "The holdout has no violations of this label."
        return Derived(None, None, reason, reason, len(rows), 0.0)
    review_rows = rows if review_evidence is None else _ordered(*review_evidence)
    review, recall_at_review, review_reason = _review(review_rows, recall_target)
    auto = auto_stats = None
    best = (0.0, None)
    for threshold, weight_sum, weight_squares, positive_sum in _cumulative(rows):
        precision = positive_sum / weight_sum
        effective_n = weight_sum * weight_sum / weight_squares
        bound = wilson_lower_bound(precision * effective_n, effective_n)
        if bound > best[0]:
            best = (bound, threshold)
        if bound >= precision_target:
            auto, auto_stats = threshold, (precision, bound, effective_n)
    if auto is None:
        at = f" (at scores >= {best[1]:.4f})" if best[1] is not None else ""
        auto_reason = (
            f"The holdout cannot support precision {precision_target:.3f}: the best 95% lower bound is "
            f"{best[0]:.4f}{at}. Auto-action is off until more decisions or a better model raise it."
        )
        return Derived(
            review, None, auto_reason, review_reason, len(rows), total_positive,
            best_bound=best[0], best_bound_at=best[1], recall_at_review=recall_at_review,
        )  # fmt: skip
    precision, bound, effective_n = auto_stats
    auto_reason = (
        f"Precision {precision:.4f}, 95% lower bound {bound:.4f} >= {precision_target:.3f} "
        f"on {effective_n:.0f} effective examples at scores >= {auto:.4f}."
    )
    if review is not None and auto < review:
        review_reason += f" Lowered to the auto-action threshold {auto:.4f}: precision already holds there."
        review = auto
    return Derived(
        review, auto, auto_reason, review_reason, len(rows), total_positive,
        precision_at_auto=precision, precision_bound_at_auto=bound, effective_n_at_auto=effective_n,
        best_bound=bound, best_bound_at=auto, recall_at_review=recall_at_review,
    )  # fmt: skip


def flagged_share(rows: Evidence, threshold: float) -> float:
    """The weighted share of examples scoring at least `threshold`: the stream share a model sends on from there."""
    scores, _positive, weights = rows
    total = sum(weights)
    if total <= 0:
        return 0.0
    return sum(weight for score, weight in zip(scores, weights, strict=True) if score >= threshold) / total


def volume_matched(*, replaced: Evidence, replaced_threshold: float, new: Evidence) -> float | None:
    """The highest score at which the new model sends on at least the share of the stream the replaced model sent
    on at `replaced_threshold`, each share estimated on that model's own weighted holdout; None without evidence.

    A new model's scores are on a scale of their own: the same number is another workload and another recall.
    While the holdout cannot measure recall (`min_violations_for_recall`), keeping the replaced model's share of
    the stream is what keeps the recall the gate compared, where keeping its number can quietly shrink the queue.
    """
    if not replaced[0] or not new[0]:
        return None
    share = flagged_share(replaced, replaced_threshold)
    rows = _ordered(*new)
    total = sum(weight for _, _, weight in rows)
    if share <= 0 or total <= 0:
        return None
    for threshold, weight_sum, _squares, _positives in _cumulative(rows):
        if weight_sum / total >= share - 1e-12:
            return threshold
    return rows[-1][0]  # pragma: no cover - the lowest score sends on everything


def label_view(
    *, label: str, prohibited: Sequence[str], labels: Sequence[str], scores: Sequence[float], weights: Sequence[float]
) -> tuple[list[float], list[bool], list[float]]:
    """The holdout as one label's thresholds see it: its own violations against the allowed side.

    Scores are the model's prohibited score (the sum over prohibited labels, as the gate and the classifier's
    metrics use it); with one prohibited label that is the label's own probability. Examples of another
    prohibited label are left out: they are neither this label's violations nor allowed photos.
    """
    kept_scores, kept_positive, kept_weights = [], [], []
    for truth, score, weight in zip(labels, scores, weights, strict=True):
        if truth != label and truth in prohibited:
            continue
        kept_scores.append(float(score))
        kept_positive.append(truth == label)
        kept_weights.append(float(weight))
    return kept_scores, kept_positive, kept_weights


def version_label_view(
    version, label: str, *, with_training: bool = True
) -> tuple[list[float], list[bool], list[float]] | None:
    """`label_view` of a model version's stored scores on examples it never trained on: its holdout, and its
    training examples scored out of sample (`ModelVersion.training_scores`: out-of-fold, or its validation and
    test splits), an example in both counted once, as the holdout has it. None when it has neither (too small a
    holdout and no out-of-sample scores, or an imported version).

    Out-of-fold scores come from fold heads trained on four fifths of the examples, without the example's
    near-duplicate group, so they stand for unseen photos; if anything they are a little worse than the final
    model's, which errs on the safe side for a precision bound. Counting them multiplies the evidence by about
    five: the holdout alone holds a fifth of the decisions, and no threshold reaches a 99% bound on fewer than
    about 270 effective examples. `with_training=False` gives the holdout alone.
    """
    holdout = version.holdout_scores or {}
    training = (version.training_scores or {}) if with_training else {}
    if not holdout.get("keys") and not training.get("keys"):
        return None
    labels, scores = list(holdout.get("labels", [])), list(holdout.get("scores", []))
    weights = list(holdout.get("weights", []))
    seen = set(holdout.get("keys", []))
    columns = [training.get(name, []) for name in ("keys", "labels", "scores", "weights")]
    for key, truth, score, weight in zip(*columns, strict=True):
        if key not in seen:
            labels.append(truth)
            scores.append(score)
            weights.append(weight)
    return label_view(label=label, prohibited=version.prohibited_labels, labels=labels, scores=scores, weights=weights)
