"""Routing: what a score means for an image, and the one place scores are written.

Each prohibited label has two thresholds (`services.calibration` derives them from targets): at or above the
auto-action threshold the model takes the image down on its own (`services.auto_action`, an automated decision
with a QA sample); at or above the review threshold it waits for review; below, it is cleared, except for the
audit sample that humans review anyway so the threshold's misses stay measured.

`record_score` routes an image by its score and `write_scores` writes a scoring batch's scores at once; both keep
one row per image and model version, so a redelivered task or two racing workers never write twice, and the
stored score is what routes the image whichever write came first.
"""

import random
from collections.abc import Callable, Iterable, Sequence

from moderation import clock
from moderation.models import ImageStatus, ListingImage, ModelVersion, ModerationSettings, Score
from moderation.selectors.audit import AuditPlan, audit_plan, closeness
from moderation.selectors.settings import get_settings
from moderation.services import auto_action, events

Rng = Callable[[], float]


def prohibited_summary(probabilities: dict[str, float], prohibited: Iterable[str]) -> tuple[float, str]:
    """The highest probability among prohibited labels and which label it is (0.0, "" when there are none)."""
    best_label, best = "", 0.0
    for label in prohibited:
        value = float(probabilities.get(label, 0.0))
        if not best_label or value > best:
            best_label, best = label, value
    return best, best_label


def is_over_threshold(probabilities: dict[str, float], prohibited: Iterable[str], row: ModerationSettings) -> bool:
    """Each prohibited label has its own threshold; reaching any one of them sends the image to review."""
    return any(float(probabilities.get(label, 0.0)) >= row.threshold_for(label) for label in prohibited)


def route_image(
    *,
    image: ListingImage,
    model_version: str,
    probabilities: dict[str, float],
    prohibited: Sequence[str],
    settings_row: ModerationSettings,
    rng: Rng | None = None,
    plan: AuditPlan | None = None,
) -> None:
    """Denormalise the score onto `image` and move it to flagged or cleared (the caller saves).

    About a share `audit_rate` of below-threshold images goes to review anyway, marked `is_audit`, so humans keep
    measuring what the threshold lets through; `plan` (read once per batch) says how likely each one is, and the
    image keeps that probability so its decision can be weighted by its inverse.
    """
    now = clock.now()
    probability, label = prohibited_summary(probabilities, prohibited)
    image.prohibited_probability = probability
    image.prohibited_label = label
    image.model_version = model_version
    image.scored_at = now
    # A score ends whatever went wrong before it: the error, the backoff of given-back attempts, the lease.
    image.last_error = ""
    image.deferrals, image.next_attempt_at = 0, None
    image.scoring_lease_key, image.scoring_lease_expires_at = "", None
    if is_over_threshold(probabilities, prohibited, settings_row):
        flagged, audit, chance = True, False, 1.0
    else:
        plan = plan or audit_plan(settings_row)
        chance = plan.probability(closeness(probability, label, settings_row))
        flagged = (rng or random.random)() < chance
        audit = flagged
    image.is_audit = audit
    image.audit_probability = chance
    if flagged:
        if image.status != ImageStatus.FLAGGED:
            image.flagged_at = now
        image.status = ImageStatus.FLAGGED
    else:
        image.status = ImageStatus.CLEARED
        image.cleared_at = now
        # A re-scored image that leaves the queue must not stay reserved by a moderator.
        image.claimed_by = None
        image.claim_expires_at = None


ROUTED_FIELDS = [
    "status",
    "prohibited_probability",
    "prohibited_label",
    "model_version",
    "scored_at",
    "flagged_at",
    "cleared_at",
    "is_audit",
    "audit_probability",
    "last_error",
    "deferrals",
    "next_attempt_at",
    "scoring_lease_key",
    "scoring_lease_expires_at",
    "claimed_by",
    "claim_expires_at",
]


def write_scores(*, results: dict[int, tuple[str, dict[str, float]]], prohibited: Sequence[str]) -> dict[int, Score]:
    """Write a batch's scores (image id: (version, probabilities)) in one statement; the stored ones by image id.

    Scores that already exist (a redelivered task, or two workers racing) are kept, not overwritten, and what is
    returned is what the database holds, so the image is routed by the first write either way. Two statements for
    the whole batch instead of a `get_or_create` (four with its savepoint) per image.
    """
    if not results:
        return {}
    rows = []
    for image_id, (model_version, probabilities) in results.items():
        probability, label = prohibited_summary(probabilities, prohibited)
        rows.append(
            Score(
                image_id=image_id,
                model_version=model_version,
                probabilities=probabilities,
                prohibited_probability=probability,
                prohibited_label=label,
            )
        )
    Score.objects.bulk_create(rows, ignore_conflicts=True)
    versions = {model_version for model_version, _ in results.values()}
    stored = Score.objects.filter(image_id__in=list(results), model_version__in=versions)
    return {score.image_id: score for score in stored if score.model_version == results[score.image_id][0]}


def record_score(
    *,
    image: ListingImage,
    model_version: str,
    probabilities: dict[str, float],
    prohibited: Sequence[str],
    settings_row: ModerationSettings,
    rng: Rng | None = None,
    plan: AuditPlan | None = None,
    auto_act: bool = True,
    score: Score | None = None,
    save_also: Sequence[str] = (),
) -> Score:
    """Write the (image, version) score once and route the image by it; call inside a transaction.

    When the score already exists (a redelivered task, or two workers racing) the stored one wins, so the image
    is routed by the same numbers whichever write came first; a caller that wrote its batch with `write_scores`
    passes the stored `score` instead. The marketplace hears of the first routing (`image.scored`) and of a new
    model routing an open image differently (`image.rescored`). A score at or above an auto-action threshold then
    takes the image down (`image.decided`; the caller refreshes the listing), unless `auto_act` is off: the
    scoring worker first lets the photo's hash bank matches speak (`auto_act_on_score`). Fields the caller set on
    `image` beforehand (`save_also`, the photo's hashes) go in the same update as the routing.
    """
    previous_status = image.status
    if score is None:
        probability, label = prohibited_summary(probabilities, prohibited)
        score, _ = Score.objects.get_or_create(
            image=image,
            model_version=model_version,
            defaults={"probabilities": probabilities, "prohibited_probability": probability, "prohibited_label": label},
        )
    route_image(
        image=image,
        model_version=model_version,
        probabilities=score.probabilities,
        prohibited=prohibited,
        settings_row=settings_row,
        rng=rng,
        plan=plan,
    )
    image.save(update_fields=[*ROUTED_FIELDS, *save_also])
    if previous_status == ImageStatus.PENDING:
        events.image_scored(image=image, score=score, rescored=False, previous_status=previous_status)
    elif previous_status != image.status:
        events.image_scored(image=image, score=score, rescored=True, previous_status=previous_status)
    if auto_act:
        auto_act_on_score(image=image, score=score, prohibited=prohibited, settings_row=settings_row, rng=rng)
    return score


def auto_act_on_score(
    *, image: ListingImage, score: Score, prohibited: Sequence[str], settings_row: ModerationSettings, rng=None
):
    """Take a flagged image down when its score reaches a label's auto-action threshold; the decision, or None."""
    reached = auto_action.over_auto_threshold(score.probabilities, prohibited, settings_row)
    if reached is None or image.status != ImageStatus.FLAGGED:
        return None
    label, threshold = reached
    return auto_action.take_down(image=image, label=label, threshold=threshold, settings_row=settings_row, rng=rng)


def prohibited_labels_of(model_version: str, fallback: Iterable[str] = ()) -> list[str]:
    """The prohibited labels a version was trained with, as mirrored from the registry."""
    row = ModelVersion.objects.filter(version=model_version).values_list("prohibited_labels", flat=True).first()
    return list(row) if row else [label for label in fallback if label]


def reuse_existing_score(*, image: ListingImage, model_version: str, rng: Rng | None = None) -> Score | None:
    """Copy a score the same model gave identical bytes (by sha256), route the image, and return it; or None."""
    earlier = (
        Score.objects.filter(image__sha256=image.sha256, model_version=model_version)
        .exclude(image=image)
        .order_by("created_at")
        .first()
    )
    if earlier is None:
        return None
    prohibited = prohibited_labels_of(model_version, fallback=[earlier.prohibited_label])
    return record_score(
        image=image,
        model_version=model_version,
        probabilities=earlier.probabilities,
        prohibited=prohibited,
        settings_row=get_settings(),
        rng=rng,
    )
