"""Near-duplicates in the training data: one group, one side of the holdout, one split, one vote.

The gate's holdout used to be chosen by each image's own sha256, so a re-encoded copy of a training image could
sit in the holdout and flatter every candidate (the model has seen the picture). Here the near-duplicate group
decides (`classifier.perceptual.groups`: PDQ within the confirmed bank's distance, through rotations and mirror
images too):

- a new decision example joins the holdout only if its group does: near-duplicates already known decide (all in
  the holdout: holdout; any in training: training), an image without any is decided by its own hash as before;
- before every retrain `keep_holdout_apart` moves holdout examples whose group also has a training example (two
  decisions racing, or a copy linking two groups) into training, audited: the holdout shrinks, it never leaks;
- the classifier's own train/validation/test split uses the group's key (`Example.group`), and each of a group's
  copies in the training set weighs 1 / the group's size, so a photo uploaded twenty times is not twenty votes.

Finding an image's near-duplicates compares its 8 variants with every active example's hash (about 10 ms for
10,000 examples): it runs inside the decision's transaction, once per decision.
"""

from collections import defaultdict
from dataclasses import replace

from classifier.perceptual.groups import near_duplicate_labels
from classifier.perceptual.index import within
from classifier.perceptual.pdq import split_dihedral
from moderation.models import AuditAction, TrainingExample
from moderation.services import audit
from moderation.services.grouping import group_rule


def _hashed_examples():
    return TrainingExample.objects.filter(active=True).exclude(pdq_dihedral="")


def group_holdout(*, dihedral: str, exclude_sha256: str = "") -> bool | None:
    """Whether a new example with these hashes belongs in the holdout by its group; None when it has no group."""
    if not dihedral:
        return None
    distance, _floor = group_rule()
    rows = list(
        _hashed_examples().exclude(sha256=exclude_sha256).values_list("pk", "pdq_dihedral", "is_holdout").order_by()
    )
    if not rows:
        return None
    originals = [bytes.fromhex(text[:64]) for _pk, text, _holdout in rows]
    found = within(split_dihedral(dihedral), originals, list(range(len(rows))), distance)
    if not len(found):
        return None
    return all(rows[int(row)][2] for row in set(found.ids.tolist()))


def example_groups(rows) -> dict[int, str]:
    """Each example's group key (the sha256 of its group's oldest example), by example id. Rows in id order."""
    distance, _floor = group_rule()
    rows = list(rows)
    hashes = [bytes.fromhex(row.pdq_dihedral) if row.pdq_dihedral else None for row in rows]
    labels = near_duplicate_labels(hashes, distance)
    return {row.pk: rows[int(label)].sha256 for row, label in zip(rows, labels, strict=True)}


def keep_holdout_apart() -> int:
    """Move holdout examples that have a near-duplicate in training into training; returns how many (audited)."""
    rows = list(_hashed_examples().order_by("id"))
    keys = example_groups(rows)
    training_groups = {keys[row.pk] for row in rows if not row.is_holdout}
    moved = [row for row in rows if row.is_holdout and keys[row.pk] in training_groups]
    for row in moved:
        TrainingExample.objects.filter(pk=row.pk).update(is_holdout=False)
        audit.record(
            action=AuditAction.EXAMPLE_MOVED_TO_TRAINING,
            obj=row,
            actor_name=audit.SYSTEM,
            before={"is_holdout": True},
            after={"is_holdout": False},
            note="A near-duplicate of this image is a training example.",
        )
    return len(moved)


def grouped_examples(examples: list, rows) -> list:
    """Classifier examples with their group key, each weighing its share of the group: weight / group size."""
    rows = list(rows)
    by_id = example_groups(rows)
    keys = {row.sha256: by_id[row.pk] for row in rows}
    sizes: dict[str, int] = defaultdict(int)
    for example in examples:
        sizes[keys.get(example.sha256, example.sha256)] += 1
    out = []
    for example in examples:
        key = keys.get(example.sha256, example.sha256)
        out.append(replace(example, group=key, weight=example.weight / sizes[key]))
    return out


def holdout_with_training_copies(*, by_image_hash: bool = False) -> int:
    """How many holdout examples have a near-duplicate among the training examples (the learning-loop figure).

    `by_image_hash` counts it as the holdout would be if each image's own hash had chosen it (the rule before
    groups), for comparison.
    """
    from moderation.selectors.settings import get_settings
    from moderation.services.examples import is_holdout

    share = get_settings().holdout_share
    rows = list(_hashed_examples().order_by("id"))
    keys = example_groups(rows)
    if by_image_hash:
        holdout = {row.pk: row.source == "decision" and is_holdout(sha256=row.sha256, share=share) for row in rows}
    else:
        holdout = {row.pk: row.is_holdout for row in rows}
    training = {keys[row.pk] for row in rows if not holdout[row.pk]}
    return sum(1 for row in rows if holdout[row.pk] and keys[row.pk] in training)
