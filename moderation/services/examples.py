"""Training examples: the labelled images the classifier learns from.

Two sources feed them. The initial training set (the folder the first model was trained on) is imported once and
stays part of every retrain, so the model never forgets what it started from. Moderators' decisions add the rest:
a confirmation is an example of its prohibited label, a rejection an example of an allowed label (a hard negative,
the false positive the model most needs to unlearn). An undone decision deactivates its example; a new decision
on the same image relabels it, so one image is never two contradicting examples.

Each decision example carries an inverse-propensity weight (see `inclusion_weight`): moderators only see what the
model flags plus a random audit sample of the rest, so unweighted decisions are a biased sample of the stream.
Initial examples weigh 1: they are a representative sample of their own.
"""

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings as django_settings
from django.db import transaction

from moderation.models import AuditAction, Decision, ExampleSource, TrainingExample
from moderation.selectors.settings import get_settings
from moderation.services import audit
from moderation.services.labels import AllowedLabelUnknown, label_for_outcome
from moderation.services.training.groups import group_holdout


class ExampleLabelUnknown(ValueError):
    """A decision whose training label cannot be told (no label on it and no model to say which labels exist)."""


def is_holdout(*, sha256: str, share: float) -> bool:
    """Whether an image belongs to the gate's frozen holdout.

    Decided by a salted hash of the image alone, so the answer never changes as data grows or settings are read
    again, and it is independent of the classifier's own train/test split (which hashes the unsalted sha256).
    """
    if share <= 0:
        return False
    digest = hashlib.sha256(f"vigia-holdout:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def inclusion_weight(*, decision: Decision, audit_rate: float) -> float:
    """The inverse-propensity weight of a decided image: 1 / the probability it reached a moderator at all.

    A QA verdict on a model auto-action was one of the automated takedowns, drawn with its `qa_probability` (the
    QA rate), so it stands for 1 / that many takedowns nobody looked at. A flagged image (score at or above the
    threshold) is always reviewed: weight 1. An audit item was one of the
    images below the threshold, picked with its recorded `audit_probability` (the audit rate itself when sampled
    uniformly, or for decisions recorded before images kept their probability), so it stands for 1 / that many
    such images that nobody looked at. Weighting by this makes sums over decisions unbiased estimates of sums
    over the whole stream, which is what training and the gate need; unweighted, the decisions over-represent
    what the model already flags. A probability of 0 cannot have produced an audit item (the setting changed
    since), so it weighs 1.
    """
    if decision.qa_outcome and decision.qa_probability is not None:
        return 1.0 / decision.qa_probability if 0 < decision.qa_probability < 1 else 1.0
    if not decision.was_audit:
        return 1.0
    probability = decision.audit_probability if decision.audit_probability is not None else audit_rate
    if 0 < probability < 1:
        return 1.0 / probability
    return 1.0


def upsert_decision_example(*, decision: Decision) -> TrainingExample:
    """Create or relabel the example of the decided image; call inside the decision's transaction.

    One row per image (`one_example_per_image_source`): an overturned decision moves the existing row to the new
    label and decision instead of adding a contradicting one. The holdout flag is decided the first time, by the
    image's near-duplicate group when it has one (`training.groups`), and kept. The
    weight uses the probability the image was sampled with, as the decision recorded it (older decisions: the
    audit rate in force now).
    """
    image = decision.image
    try:
        label = decision.label or label_for_outcome(outcome=decision.outcome, flagged_label=image.prohibited_label)
    except AllowedLabelUnknown as error:
        raise ExampleLabelUnknown(f"decision {decision.pk}: {error}") from error
    if not label:
        raise ExampleLabelUnknown(f"decision {decision.pk} has no label and no active model names one")
    settings_row = get_settings()
    weight = inclusion_weight(decision=decision, audit_rate=settings_row.audit_rate)
    example = (
        TrainingExample.objects.select_for_update().filter(sha256=image.sha256, source=ExampleSource.DECISION).first()
    )
    if example is None:
        holdout = group_holdout(dihedral=image.pdq_dihedral, exclude_sha256=image.sha256)
        if holdout is None:
            holdout = is_holdout(sha256=image.sha256, share=settings_row.holdout_share)
        return TrainingExample.objects.create(
            sha256=image.sha256,
            path=image.file.name,
            label=label,
            source=ExampleSource.DECISION,
            image=image,
            decision=decision,
            moderator=decision.moderator or decision.qa_by,
            is_holdout=holdout,
            pdq_dihedral=image.pdq_dihedral,
            active=True,
            weight=weight,
        )
    example.label = label
    example.path = image.file.name
    example.image = image
    example.decision = decision
    example.moderator = decision.moderator or decision.qa_by
    example.active = True
    example.weight = weight
    example.pdq_dihedral = image.pdq_dihedral or example.pdq_dihedral
    example.save(update_fields=["label", "path", "image", "decision", "moderator", "active", "weight", "pdq_dihedral"])
    return example


def deactivate_example(*, example_id: int, reason: str) -> TrainingExample:
    """Stop training on one example for a stated reason (audited); the only change an example ever gets by hand.

    Examples are never relabelled in place: a wrong label is corrected by a new decision (or an appeal), which
    keeps the lineage. Deactivating one that is already inactive changes nothing.
    """
    if not reason or not reason.strip():
        raise ValueError("Say why the example is deactivated.")
    with transaction.atomic():
        example = TrainingExample.objects.select_for_update().get(pk=example_id)
        if example.active:
            example.active = False
            example.save(update_fields=["active"])
            audit.record(
                action=AuditAction.EXAMPLE_DEACTIVATED,
                obj=example,
                before={"active": True, "label": example.label, "is_holdout": example.is_holdout},
                after={"active": False},
                note=reason.strip(),
            )
    return example


def deactivate_decision_example(*, decision: Decision) -> int:
    """Stop training on what an undone decision said. Returns how many examples were deactivated."""
    return TrainingExample.objects.filter(decision=decision, active=True).update(active=False)


@dataclass(frozen=True)
class ImportReport:
    """What an import did: examples created, already known, files skipped with the reason, and the labels found."""

    created: int
    existing: int
    skipped: list[tuple[str, str]]
    labels: list[str]


def _dihedral_of(path: Path) -> str:
    """The PDQ hashes of an imported file (so a copy of it never lands in the holdout); "" if it cannot be read."""
    from classifier.perceptual.pdq import hash_image

    try:
        return hash_image(path).dihedral_hex
    except Exception:  # an unreadable file is skipped by the training scan anyway
        return ""


def import_training_set(*, directory: Path, copy: bool = True) -> ImportReport:
    """Import a folder-per-class training set as `initial` examples (idempotent: known images are skipped).

    Files are copied under MEDIA_ROOT/training/initial/<label>/ by default so the examples survive the source
    folder being removed; `copy=False` references them where they are (absolute paths). Initial examples are
    never part of the holdout: the gate measures on human decisions only.
    """
    from classifier.data import scan_folder

    scan = scan_folder(directory)
    media_root = Path(django_settings.MEDIA_ROOT)
    known = set(TrainingExample.objects.filter(source=ExampleSource.INITIAL).values_list("sha256", flat=True))
    to_create: list[TrainingExample] = []
    existing = 0
    for example in scan.examples:
        if example.sha256 in known:
            existing += 1
            continue
        known.add(example.sha256)
        source_path = Path(example.path).resolve()
        if copy:
            relative = Path("training") / "initial" / example.label / f"{example.sha256}{source_path.suffix.lower()}"
            target = media_root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copyfile(source_path, target)
            stored = relative.as_posix()
        else:
            stored = str(source_path)
        to_create.append(
            TrainingExample(
                sha256=example.sha256,
                path=stored,
                label=example.label,
                source=ExampleSource.INITIAL,
                pdq_dihedral=_dihedral_of(source_path),
            )
        )
    TrainingExample.objects.bulk_create(to_create, ignore_conflicts=True)
    return ImportReport(created=len(to_create), existing=existing, skipped=list(scan.skipped), labels=list(scan.labels))
