"""The one rule for the training label a decision teaches.

A confirmation teaches the prohibited label the moderator confirmed: the one the image was flagged for (else the
active model's first prohibited label). A rejection, an audited-clean image or an overturned automated takedown
teaches the model's allowed side as the model itself defines it: the version's `allowed_label` metadata when it
has one (a model that learns prohibited labels against a mixture of everything else names the label that mixture
is trained as), else its single non-prohibited label. A model with several allowed labels and no `allowed_label`
cannot say which one a rejected photo belongs to, and `AllowedLabelUnknown` says so rather than guess.

A label is never invented: with no model to name one the answer is "", and the learning loop then skips the
example rather than learning a class no model has. The review desk stores the answer on the decision when it is
made; a decision stored without one (imported, or decided before any model existed) is labelled by the same rule
when its example is written.
"""

import logging
from collections.abc import Sequence

from moderation.models import DecisionOutcome
from moderation.selectors.models import active_model, active_model_labels

logger = logging.getLogger(__name__)


class AllowedLabelUnknown(ValueError):
    """The model has several allowed labels and no `allowed_label` metadata: a rejection's label cannot be told."""


def allowed_side(*, labels: Sequence[str], prohibited: Sequence[str], allowed_label: str = "") -> str:
    """The label a model trains everything that is not prohibited as ("" when it has no label set at all).

    Raises `AllowedLabelUnknown` when the model names an `allowed_label` it does not have, or has several allowed
    labels and names none.
    """
    allowed = [label for label in labels if label not in prohibited]
    if allowed_label:
        if labels and allowed_label not in allowed:
            raise AllowedLabelUnknown(
                f"The model's allowed_label {allowed_label!r} is not one of its allowed labels {allowed}."
            )
        return allowed_label
    if len(allowed) > 1:
        raise AllowedLabelUnknown(
            f"The model has {len(allowed)} allowed labels ({', '.join(allowed)}) and no allowed_label in its "
            "metadata, so a rejected photo's training label cannot be told: save the version with allowed_label."
        )
    return allowed[0] if allowed else ""


def taught_label(
    *, outcome: str, flagged_label: str, labels: Sequence[str], prohibited: Sequence[str], allowed_label: str = ""
) -> str:
    """The label `outcome` teaches given the image's flagged label and a model's label set ("" when none fits)."""
    if outcome == DecisionOutcome.CONFIRM:
        return flagged_label or (prohibited[0] if prohibited else "")
    return allowed_side(labels=labels, prohibited=prohibited, allowed_label=allowed_label)


def label_for_outcome(*, outcome: str, flagged_label: str) -> str:
    """The label `outcome` teaches under the active model (or the thresholds' labels before any model).

    Raises `AllowedLabelUnknown` as `allowed_side` does.
    """
    labels, prohibited = active_model_labels()
    active = active_model()
    return taught_label(
        outcome=outcome,
        flagged_label=flagged_label,
        labels=labels,
        prohibited=prohibited,
        allowed_label=active.allowed_label if active is not None else "",
    )


def label_or_blank(*, outcome: str, flagged_label: str) -> str:
    """`label_for_outcome` for a decision being recorded: a moderator's verdict is never refused for a label.

    When the rule cannot tell the label, the decision is stored without one (logged with the reason), and writing
    its example raises the same clear error, so the example is skipped rather than learnt wrong.
    """
    try:
        return label_for_outcome(outcome=outcome, flagged_label=flagged_label)
    except AllowedLabelUnknown as error:
        logger.error("a %s decision teaches no label: %s", outcome, error)
        return ""
