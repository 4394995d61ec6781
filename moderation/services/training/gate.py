"""The gate: a candidate is promoted only when it is at least as good as the active model on the frozen holdout.

The holdout is the decision examples whose image hash puts them there (`services.examples.is_holdout`): human
labels no model ever trains on. Both models are scored on it with the examples' inverse-propensity weights, and
the paired bootstrap (`classifier.comparison.paired_changes`) says how much of a difference is the holdout's own
noise. The verdict is one `GateVerdict`, stored on the run as JSON and shown on its page.
"""

import math
from dataclasses import asdict, dataclass, field

from django.conf import settings as django_settings

from moderation.models import GateMetric, ModerationSettings
from moderation.selectors.training import gate_threshold, holdout_examples, label_counts, trainable_examples
from moderation.services.training.dataset import weighted_examples

GATE_METRIC_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "auc",
    "n",
    "weighted_n",
    "confusion_matrix",
    "labels",
)
#: Fields of a verdict that exist only once the comparison got that far; absent from the JSON until then.
_OPTIONAL = (
    "embedded",
    "tolerance",
    "recall_change",
    "recall_change_se",
    "precision_change",
    "precision_change_se",
    "auc_change",
    "auc_change_se",
)


@dataclass
class GateVerdict:
    """Candidate against the active model on the holdout: the evidence, and whether to promote and why."""

    metric: str
    threshold: float
    margin: float
    min_per_label: int
    holdout_counts: dict[str, int]
    evaluation_counts: dict[str, int]
    candidate_version: str
    active_version: str | None
    extended_with_test_split: int = 0
    candidate: dict | None = None
    active: dict | None = None
    weighted_total: float = 0.0
    promote: bool = False
    reason: str = ""
    embedded: int | None = None
    tolerance: float | None = None
    recall_change: float | None = None
    recall_change_se: float | None = None
    precision_change: float | None = None
    precision_change_se: float | None = None
    auc_change: float | None = None
    auc_change_se: float | None = None
    #: The candidate's score on each example it was judged on, and each example's true label by sha256: what
    #: recalibration derives the version's thresholds from. Not part of the stored verdict.
    candidate_outcomes: dict | None = field(default=None, repr=False)
    labels_by_key: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        """The JSON stored on `TrainingRun.gate` (and read by the run and version pages and the benchmarks)."""
        data = asdict(self)
        data.pop("candidate_outcomes")
        data.pop("labels_by_key")
        for key in _OPTIONAL:
            if data[key] is None:
                data.pop(key)
        return data


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _summary(metrics: dict) -> dict:
    return {key: _clean(metrics.get(key)) for key in GATE_METRIC_KEYS if key in metrics}


def compare_on_gate(
    candidate: dict,
    active: dict,
    metric: str,
    margin: float,
    recall_allowance: float = 0.0,
    auc_allowance: float | None = None,
) -> tuple[bool, str]:
    """Whether the candidate is at least as good as the active model on the gate metric, and why (pure).

    ``recall_allowance`` is how far the candidate's recall may fall below the active model's and still count as
    no worse: the holdout's own noise in the paired recall difference (tolerance x standard error); 0 is the
    strict rule. Precision keeps the admin's fixed ``margin``. With ``auc_allowance`` the candidate's ROC AUC
    must not fall by more than that either: a model that flags more while ranking worse is what a recall rule
    with room for noise could otherwise let through.
    """

    def value(metrics: dict, key: str) -> float:
        raw = _clean(metrics.get(key))
        return 0.0 if raw is None else float(raw)

    if metric == GateMetric.RECALL:
        c_recall, a_recall = value(candidate, "recall"), value(active, "recall")
        c_precision, a_precision = value(candidate, "precision"), value(active, "precision")
        if auc_allowance is not None:
            c_auc, a_auc = value(candidate, "auc"), value(active, "auc")
            if c_auc < a_auc - auc_allowance - 1e-12:
                return False, (
                    f"ROC AUC on the holdout fell from {a_auc:.3f} to {c_auc:.3f}, "
                    f"more than the {auc_allowance:.3f} its noise allows."
                )
        if c_recall < a_recall - recall_allowance - 1e-12:
            allowed = f", more than the {recall_allowance:.3f} its noise allows" if recall_allowance else ""
            return False, f"Recall on the holdout fell from {a_recall:.3f} to {c_recall:.3f}{allowed}."
        if c_precision < a_precision - margin:
            return False, (
                f"Precision on the holdout fell from {a_precision:.3f} to {c_precision:.3f}, "
                f"more than the allowed margin of {margin:.3f}."
            )
        within = f", within the {recall_allowance:.3f} its noise allows" if c_recall < a_recall else ""
        return True, (
            f"Recall {a_recall:.3f} -> {c_recall:.3f}{within}, precision {a_precision:.3f} -> {c_precision:.3f} "
            f"(margin {margin:.3f}): promoted."
        )
    key = "f1" if metric == GateMetric.F1 else "accuracy"
    c_value, a_value = value(candidate, key), value(active, key)
    if c_value < a_value:
        return False, f"{key} on the holdout fell from {a_value:.3f} to {c_value:.3f}."
    return True, f"{key} {a_value:.3f} -> {c_value:.3f}: promoted."


def _unseen_test_rows(registry, version: str, active_version: str, labels: list[str]):
    """Trainable examples in the candidate's test split that the active model never trained on either.

    Both models use the same stable hash split, so these are as unseen by the active model as by the candidate:
    a fair extension of a holdout that is still too small (early on, rejections are rare, so the allowed label's
    holdout grows slowly).
    """
    active_manifest = registry.manifest(active_version)
    seen_by_active = set(active_manifest.get("train", [])) | set(active_manifest.get("validation", []))
    unseen = set(registry.manifest(version).get("test", [])) - seen_by_active
    return trainable_examples().filter(sha256__in=unseen, label__in=labels)


def evaluate_gate(
    *,
    registry,
    version: str,
    active_version: str | None,
    labels: list[str],
    prohibited: list[str],
    settings_row: ModerationSettings,
) -> GateVerdict:
    """Score the candidate and the active model on the frozen holdout and decide whether to promote.

    Both are scored with the examples' inverse-propensity weights: a holdout of decisions holds every image the
    active model flagged but only an audit sample of the rest, so unweighted it credits the active model with a
    recall near 1 by construction. Weighted, both models are judged on an estimate of the real stream. The
    minimum per label still counts images, not weights: a few heavy audit images are not enough evidence.

    With no active model the first candidate is promoted: nothing can be scored without a model, and any model
    the gate could compare against later starts here. Its holdout metrics are still recorded when there is a
    holdout. With an active model, a holdout with too few examples of a label is extended by the candidate's test
    split images neither model trained on; if even that is too small, no verdict can be trusted and the
    candidate is rejected with that reason.
    """
    from classifier.comparison import paired_changes
    from classifier.evaluation import evaluate_model

    holdout_rows = holdout_examples().filter(label__in=labels)
    counts = {label: 0 for label in labels}
    counts.update(label_counts(holdout_rows))
    minimum = settings_row.gate_min_holdout_per_label
    verdict = GateVerdict(
        metric=settings_row.gate_metric,
        threshold=gate_threshold(settings_row, prohibited),
        margin=settings_row.gate_precision_margin,
        min_per_label=minimum,
        holdout_counts=counts,
        evaluation_counts=dict(counts),
        candidate_version=version,
        active_version=active_version,
    )
    rows = list(holdout_rows)
    if active_version is not None and any(n < minimum for n in counts.values()):
        extra = list(_unseen_test_rows(registry, version, active_version, labels))
        rows += extra
        verdict.extended_with_test_split = len(extra)
        for row in extra:
            verdict.evaluation_counts[row.label] = verdict.evaluation_counts.get(row.label, 0) + 1
    short = {label: n for label, n in verdict.evaluation_counts.items() if n < minimum}
    evaluation_set = weighted_examples(rows) if not short or active_version is None else []
    verdict.weighted_total = round(sum(example.weight for example in evaluation_set), 3)

    # Both models are scored on the shared bottleneck cache when their backbones filled it (the usual retrain):
    # each holdout image is then embedded at most once, often already when it was decided.
    cache_dir = django_settings.VIGIA_FEATURE_CACHE
    candidate_model = registry.load(version)
    candidate_outcomes = None
    if evaluation_set:
        scored = evaluate_model(
            candidate_model, evaluation_set, threshold=verdict.threshold, keep_outcomes=True, cache_dir=cache_dir
        )
        candidate_outcomes = scored["outcomes"]
        verdict.candidate_outcomes = candidate_outcomes
        verdict.labels_by_key = {row.sha256: row.label for row in rows}
        verdict.candidate = _summary(scored)
        verdict.embedded = scored["embedded"]
    if active_version is None:
        verdict.promote, verdict.reason = True, "No model was active: the first candidate is promoted."
        return verdict
    if short:
        needed = ", ".join(f"{label} {n}/{minimum}" for label, n in short.items())
        verdict.reason = f"Not enough holdout examples to compare ({needed}); the active model stays."
        return verdict
    try:
        active_model = registry.load(active_version)
    except Exception as exc:  # a broken active model must not keep a loadable candidate out
        verdict.promote = True
        verdict.reason = f"The active model {active_version} could not be loaded ({exc}); the candidate replaces it."
        return verdict
    scored = evaluate_model(
        active_model, evaluation_set, threshold=verdict.threshold, keep_outcomes=True, cache_dir=cache_dir
    )
    verdict.active = _summary(scored)
    verdict.embedded = (verdict.embedded or 0) + scored["embedded"]
    paired = paired_changes(scored["outcomes"], candidate_outcomes) or {}
    for key, change in paired.items():
        if change is not None:
            setattr(verdict, f"{key}_change", round(change[0], 4))
            setattr(verdict, f"{key}_change_se", round(change[1], 4))
    tolerance = settings_row.gate_tolerance
    verdict.tolerance = tolerance
    recall_change, auc_change = paired.get("recall"), paired.get("auc")
    verdict.promote, verdict.reason = compare_on_gate(
        verdict.candidate,
        verdict.active,
        settings_row.gate_metric,
        settings_row.gate_precision_margin,
        recall_allowance=tolerance * recall_change[1] if recall_change else 0.0,
        auc_allowance=tolerance * auc_change[1] if auc_change and tolerance else None,
    )
    if verdict.extended_with_test_split:
        verdict.reason += f" (Holdout extended with {verdict.extended_with_test_split} unseen test-split images.)"
    return verdict
