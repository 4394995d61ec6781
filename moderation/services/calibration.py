"""Recalibration: each model version's thresholds derived from its own holdout scores, and made the desk's.

A training run stores the candidate's prohibited score on every example the gate judged it on (the holdout,
extended by test-split images neither model trained on while the holdout is small; `store_holdout_scores`), so
deriving thresholds later needs no model in the web process. `recalibrate` runs in
the transaction of every activation (a promotion, a manual activation, a rollback): it derives both thresholds per
prohibited label from the version's holdout scores and the admin's targets (`services.thresholds`), stores them
on the version, and makes them the settings' thresholds, except for the labels an admin pinned, whose hand-set
thresholds stay. What changed is audited and kept on the settings row (`last_calibration`) so the settings page
shows the old thresholds beside the new ones. A rollback therefore restores the version's own thresholds: they
are derived again from its own holdout scores.

A version without holdout scores (imported, or trained while the holdout was too small to score) keeps the
review thresholds it finds and gets no auto-action, with the reason: nothing measured says it is safe.

While a version's holdout holds too few violations to measure recall, its review threshold is set at its first
activation to send on the share of the stream the version it replaces sent on, or the threshold in force if that
sends more (`thresholds.volume_matched`), and kept with the version: a rollback or a changed target finds it
there. A retrained model's scores are on their own scale, so keeping only the number (0.5 under one model,
0.5 under the next) was measured to shrink the queue round after round while the recall nobody could measure fell.
"""

from classifier.metrics import prohibited_decisions
from moderation import clock
from moderation.models import AuditAction, ModelVersion, ModerationSettings
from moderation.services import audit
from moderation.services.thresholds import derive, version_label_view, volume_matched


def store_training_scores(*, version: str, result, examples) -> int:
    """Keep a version's out-of-sample scores of its training examples (`TrainingResult.out_of_sample`), each with
    the example's label and weight as training had it before scaling (its inverse-propensity weight, the
    holdout's kind, shared among the copies of its near-duplicate group); returns how many. Examples the desk
    does not hold (out-of-distribution negatives made for the run) are left out."""
    scores = result.out_of_sample or {}
    by_sha = {example.sha256: example for example in examples}
    prohibited_scores, _ = prohibited_decisions(scores.get("probabilities", []), result.labels, result.prohibited)
    data = {"keys": [], "labels": [], "scores": [], "weights": [], "sources": []}
    columns = (scores.get("keys", []), prohibited_scores, scores.get("sources", []))
    for key, score, source in zip(*columns, strict=True):
        example = by_sha.get(key)
        if example is None:
            continue
        data["keys"].append(key)
        data["labels"].append(example.label)
        data["scores"].append(round(float(score), 6))
        data["weights"].append(float(example.weight))
        data["sources"].append(source)
    ModelVersion.objects.filter(version=version).update(training_scores=data if data["keys"] else {})
    return len(data["keys"])


def store_holdout_scores(*, version: str, outcomes: dict | None, labels_by_key: dict[str, str]) -> None:
    """Keep a version's scores on the holdout (the gate's `outcomes`), each with its example's true label."""
    if not outcomes:
        return
    keys = list(outcomes["keys"])
    data = {
        "keys": keys,
        "labels": [labels_by_key.get(key, "") for key in keys],
        "scores": [round(float(score), 6) for score in outcomes["scores"]],
        "weights": [float(weight) for weight in outcomes["weights"]],
        "scored_at": clock.now().isoformat(),
    }
    ModelVersion.objects.filter(version=version).update(holdout_scores=data)


def _volume_review(
    *,
    version: ModelVersion,
    label: str,
    result: dict,
    holdout: tuple,
    replaced: ModelVersion | None,
    in_force: float,
) -> dict:
    """The review threshold `result` lacks (too few holdout violations), set by volume.

    The version's own, once it has one (set at its first activation), so a rollback restores it; else matched to
    the replaced version's share of the stream at the threshold in force, never above that threshold: the gate
    compared the two models there, so a lower threshold only adds review, where a higher one would cut recall no
    one measured. With nothing to match (no version replaced, or no holdout scores on either side) the threshold
    in force is kept, and becomes the version's own.
    """
    stored = ((version.calibration or {}).get("derived") or {}).get(label) or {}
    if stored.get("review_source") == "volume" and stored.get("review") is not None:
        return {"review": stored["review"], "review_reason": stored["review_reason"]}
    ceiling = float(in_force) if result.get("auto") is None else min(float(in_force), result["auto"])
    kept = {"review": ceiling, "review_reason": result.get("review_reason", "")}
    if replaced is None or replaced.pk == version.pk:
        return kept
    replaced_view = version_label_view(replaced, label, with_training=False)
    if replaced_view is None:
        return kept
    matched = volume_matched(replaced=replaced_view, replaced_threshold=in_force, new=holdout)
    if matched is None:
        return kept
    review = min(ceiling, matched)
    how = (
        f"lowered to {review:.4f} to send on the share of the stream {replaced.version} sent on at {in_force:.4f}"
        if review < in_force
        else f"kept at {in_force:.4f}: it already sends on more than {replaced.version} did"
    )
    reason = f"{result.get('review_reason', '')} Until it can be measured, {how}.".strip()
    return {"review": round(review, 6), "review_reason": reason}


def derive_for_version(
    *, version: ModelVersion, settings_row: ModerationSettings, replaced: ModelVersion | None = None
) -> dict[str, dict]:
    """Both thresholds per prohibited label of `version`, from its scores on unseen examples and the targets.

    The auto-action threshold is a precision claim on the highest scores, and the bound it needs about 270
    effective examples there: it is derived from the holdout and the training examples' out-of-sample scores
    together (`thresholds.version_label_view`). The review threshold is a recall claim on the lowest-scoring
    violations, which the desk knows mostly through a few audit items weighing 1 / the audit rate each; the
    training examples' audit items are of the same kind, and counting them would satisfy the 20-violation guard
    (`thresholds.min_violations_for_recall`) long before that tail is known, so it stays on the holdout alone.
    """
    derived = {}
    targets = {"precision_target": settings_row.precision_target, "recall_target": settings_row.recall_target}
    for label in version.prohibited_labels:
        evidence = version_label_view(version, label)
        if evidence is None:
            reason = (
                f"{version.version} has no holdout scores (the holdout was too small to score, or it was imported)."
            )
            derived[label] = {"review": None, "auto": None, "auto_reason": reason, "review_reason": reason}
            continue
        holdout = version_label_view(version, label, with_training=False) or ([], [], [])
        scores, positive, weights = evidence
        result = derive(scores=scores, positive=positive, weights=weights, review_evidence=holdout, **targets)
        derived[label] = result.as_dict()
        derived[label]["evidence"] = {"holdout": len(holdout[0]), "with_training": len(scores)}
        if result.review is None and label not in settings_row.pinned_labels:
            by_volume = _volume_review(
                version=version,
                label=label,
                result=derived[label],
                holdout=holdout,
                replaced=replaced,
                in_force=settings_row.threshold_for(label),
            )
            derived[label].update(by_volume, review_source="volume")
    return derived


def _thresholds(row: ModerationSettings) -> dict:
    return {
        "thresholds": dict(row.thresholds),
        "auto_thresholds": dict(row.auto_thresholds),
        "auto_off_reasons": dict(row.auto_off_reasons),
    }


def recalibrate(*, version: str, reason: str, replaced: str | None = None) -> ModerationSettings:
    """Derive `version`'s thresholds and make them the desk's (pinned labels kept); audited. Call in a transaction.

    `replaced` is the version that served until this activation, whose share of the stream a version that cannot
    yet measure its recall keeps.
    """
    from moderation.selectors.settings import get_settings

    get_settings()
    row = ModerationSettings.objects.select_for_update().get(pk=1)
    target = ModelVersion.objects.get(version=version)
    replaced_version = ModelVersion.objects.filter(version=replaced).first() if replaced else None
    derived = derive_for_version(version=target, settings_row=row, replaced=replaced_version)
    before = _thresholds(row)
    pinned = set(row.pinned_labels)
    for label, result in derived.items():
        if label in pinned:
            continue
        if result.get("review") is not None:
            row.thresholds[label] = result["review"]
        if result.get("auto") is not None:
            row.auto_thresholds[label] = result["auto"]
            row.auto_off_reasons.pop(label, None)
        else:
            row.auto_thresholds.pop(label, None)
            row.auto_off_reasons[label] = result["auto_reason"]
    after = _thresholds(row)
    now = clock.now()
    targets = {"precision_target": row.precision_target, "recall_target": row.recall_target}
    target.calibration = {"derived": derived, "at": now.isoformat(), **targets}
    target.save(update_fields=["calibration"])
    row.last_calibration = {
        "version": version,
        "at": now.isoformat(),
        "reason": reason,
        "pinned": sorted(pinned & set(derived)),
        "before": before,
        "after": after,
        "derived": derived,
        **targets,
    }
    row.save(update_fields=["thresholds", "auto_thresholds", "auto_off_reasons", "last_calibration", "updated_at"])
    audit.record(action=AuditAction.MODEL_RECALIBRATED, obj=target, before=before, after=after, note=reason)
    return row
