"""What a decision teaches: the confirmed prohibited label, or the allowed side as the model defines it."""

import pytest

from moderation.models import DecisionOutcome, ModelVersion
from moderation.services.labels import AllowedLabelUnknown, allowed_side, label_for_outcome, taught_label

CONFIRM, REJECT = DecisionOutcome.CONFIRM, DecisionOutcome.REJECT


def test_a_rejection_teaches_the_allowed_label_the_model_names_even_among_many():
    labels, prohibited = ["Coat", "Pullover", "other", "Trouser"], ["Pullover"]
    assert (
        taught_label(
            outcome=REJECT, flagged_label="Pullover", labels=labels, prohibited=prohibited, allowed_label="other"
        )
        == "other"
    )


def test_a_rejection_teaches_the_single_non_prohibited_label_without_metadata():
    assert (
        taught_label(outcome=REJECT, flagged_label="Pullover", labels=["Coat", "Pullover"], prohibited=["Pullover"])
        == "Coat"
    )


def test_several_allowed_labels_and_no_allowed_label_is_a_clear_error():
    with pytest.raises(AllowedLabelUnknown, match="allowed_label"):
        taught_label(
            outcome=REJECT, flagged_label="Pullover", labels=["Coat", "Pullover", "Shirt"], prohibited=["Pullover"]
        )


def test_an_allowed_label_the_model_does_not_have_is_refused():
    with pytest.raises(AllowedLabelUnknown, match="not one of its allowed labels"):
        allowed_side(labels=["Coat", "Pullover"], prohibited=["Pullover"], allowed_label="Pullover")


def test_a_confirmation_teaches_the_prohibited_label_confirmed_whatever_the_allowed_side():
    labels, prohibited = ["gun", "knife", "other"], ["gun", "knife"]
    assert taught_label(outcome=CONFIRM, flagged_label="knife", labels=labels, prohibited=prohibited) == "knife"
    assert taught_label(outcome=CONFIRM, flagged_label="", labels=labels, prohibited=prohibited) == "gun"


@pytest.mark.django_db
def test_the_active_models_mirrored_allowed_label_decides():
    ModelVersion.objects.create(
        version="v0001",
        labels=["Coat", "Pullover", "everything-else"],
        prohibited_labels=["Pullover"],
        allowed_label="everything-else",
        is_active=True,
    )
    assert label_for_outcome(outcome=REJECT, flagged_label="Pullover") == "everything-else"
    assert label_for_outcome(outcome=CONFIRM, flagged_label="Pullover") == "Pullover"
