"""The one rule for the training label a moderator's decision teaches.

A confirmation teaches the prohibited label the image was flagged for (else the active model's first prohibited
label); a rejection teaches the model's allowed label, the hard negative the next retrain needs. A label is never
invented: with no model to name one the answer is "", and the learning loop then skips the example rather than
learning a class no model has. The review desk stores the answer on the decision when it is made; a decision
stored without one (imported, or decided before any model existed) is labelled by the same rule when its example
is written.
"""

from collections.abc import Sequence

from moderation.models import DecisionOutcome
from moderation.selectors.models import active_model_labels


def taught_label(*, outcome: str, flagged_label: str, labels: Sequence[str], prohibited: Sequence[str]) -> str:
    """The label `outcome` teaches given the image's flagged label and a model's label set ("" when none fits)."""
    if outcome == DecisionOutcome.CONFIRM:
        return flagged_label or (prohibited[0] if prohibited else "")
    allowed = [label for label in labels if label not in prohibited]
    return allowed[0] if allowed else ""


def label_for_outcome(*, outcome: str, flagged_label: str) -> str:
    """The label `outcome` teaches under the active model (or the thresholds' labels before any model)."""
    labels, prohibited = active_model_labels()
    return taught_label(outcome=outcome, flagged_label=flagged_label, labels=labels, prohibited=prohibited)
