"""What a retrain learns from: the label set, and the examples as the classifier sees them, with their weights.

Every decision example carries an inverse-propensity weight (`services.examples.inclusion_weight`); training and
the gate both use it, so the model learns from, and is judged on, an estimate of the whole stream rather than the
flagged images plus a thin audit sample.
"""

from dataclasses import replace

from moderation.models import ModelVersion, ModerationSettings
from moderation.selectors.training import to_classifier_examples_from_rows, trainable_examples


def labels_for_run(*, active: ModelVersion | None, settings_row: ModerationSettings) -> tuple[list[str], list[str]]:
    """The label set keeps the active model's; the very first model takes the examples' labels."""
    if active is not None:
        return list(active.labels), list(active.prohibited_labels)
    labels = sorted(set(trainable_examples().values_list("label", flat=True)))
    prohibited = [label for label in labels if label in settings_row.thresholds]
    if not prohibited:
        raise ValueError(
            "No prohibited label is known: give one a threshold in the settings, or import with --prohibited."
        )
    return labels, prohibited


def weighted_examples(rows) -> list:
    """Rows as classifier examples carrying their inverse-propensity weights (missing files are skipped)."""
    rows = list(rows)
    weight_of = {row.sha256: float(row.weight) for row in rows}
    return [replace(example, weight=weight_of[example.sha256]) for example in to_classifier_examples_from_rows(rows)]


def mean_one(examples: list) -> list:
    """The same weights scaled to average 1, for training.

    Only their ratios matter to what is learned, and at mean 1 the weighted loss keeps the scale the classifier's
    learning rate was chosen for; heavy audit items would otherwise raise the effective step size with the
    audit share.
    """
    total = sum(example.weight for example in examples)
    if not examples or total <= 0:
        return examples
    scale = len(examples) / total
    return [replace(example, weight=example.weight * scale) for example in examples]
