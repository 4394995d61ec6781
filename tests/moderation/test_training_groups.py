"""Near-duplicates in the training data share one side of the holdout and one split, and vote once."""

import pytest

from classifier.data import Example
from classifier.hparams import HParams
from classifier.perceptual.pdq import hash_image
from classifier.training import _assign_splits
from moderation.models import AuditAction, AuditEntry, DecisionOutcome, ExampleSource, TrainingExample
from moderation.selectors.settings import get_settings
from moderation.services.training import groups
from tests.support.banks import decided, scored_photo
from tests.support.images import mirrored, photo

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bank_desk", "active_model")]


def example(
    name: str, *, holdout: bool, transform=None, source=ExampleSource.DECISION, sha: str = ""
) -> TrainingExample:
    pdq = hash_image(photo(name, transform, size=(96, 72)))
    return TrainingExample.objects.create(
        sha256=sha or pdq.hex,
        path=f"x/{pdq.hex}.jpg",
        label="weapon",
        source=source,
        is_holdout=holdout,
        pdq_dihedral=pdq.dihedral_hex,
    )


def holdout_share(value: float) -> None:
    row = get_settings()
    row.holdout_share = value
    row.save()


@pytest.mark.parametrize("in_holdout", [True, False])
def test_a_new_decision_joins_the_side_of_its_near_duplicates_whatever_its_own_hash_says(moderator, in_holdout):
    example("chelsea", holdout=in_holdout)
    holdout_share(0.0 if in_holdout else 1.0)  # its own hash alone would put it on the other side
    image = scored_photo("chelsea", transform=mirrored)
    decided(image, moderator, DecisionOutcome.REJECT)
    assert image.examples.get().is_holdout is in_holdout


def test_a_decision_without_near_duplicates_is_placed_by_its_own_hash(moderator):
    example("rocket", holdout=True)
    holdout_share(0.0)
    image = scored_photo("chelsea")
    decided(image, moderator, DecisionOutcome.CONFIRM)
    assert image.examples.get().is_holdout is False


def test_before_a_retrain_holdout_copies_of_training_images_move_to_training_audited():
    kept = example("rocket", holdout=True)
    copy = example("chelsea", holdout=True, transform=mirrored)
    example("chelsea", holdout=False, source=ExampleSource.INITIAL)
    assert groups.holdout_with_training_copies() == 1
    assert groups.keep_holdout_apart() == 1
    copy.refresh_from_db()
    kept.refresh_from_db()
    assert (copy.is_holdout, kept.is_holdout) == (False, True)
    assert AuditEntry.objects.get(action=AuditAction.EXAMPLE_MOVED_TO_TRAINING).object_id == str(copy.pk)
    assert groups.holdout_with_training_copies() == 0


def test_copies_get_one_group_key_share_one_split_and_one_vote():
    rows = [
        example("chelsea", holdout=False),
        example("chelsea", holdout=False, transform=mirrored),
        example("chelsea", holdout=False, transform=lambda im: im.rotate(90, expand=True)),
        example("coffee", holdout=False),
    ]
    plain = [Example(sha256=row.sha256, label=row.label, weight=2.0) for row in rows]
    grouped = groups.grouped_examples(plain, rows)
    assert [e.group for e in grouped[:3]] == [rows[0].sha256] * 3 and grouped[3].group == rows[3].sha256
    assert [round(e.weight, 4) for e in grouped] == [0.6667, 0.6667, 0.6667, 2.0]
    for shares in [(0.3, 0.1), (0.5, 0.2), (0.0, 0.9)]:
        hparams = HParams(test_share=shares[0], validation_share=shares[1])
        splits, _ = _assign_splits(grouped, hparams, None)
        where = {e.sha256: name for name, members in splits.items() for e in members}
        assert len({where[row.sha256] for row in rows[:3]}) == 1


def test_the_learning_loop_figure_counts_what_the_hash_rule_would_have_leaked():
    holdout_share(1.0)
    example("chelsea", holdout=False, source=ExampleSource.INITIAL)
    example("chelsea", holdout=False, transform=mirrored)  # grouped: kept out of the holdout
    assert groups.holdout_with_training_copies() == 0
    assert groups.holdout_with_training_copies(by_image_hash=True) == 1
