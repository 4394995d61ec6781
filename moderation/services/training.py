"""Training data and retrain triggers from moderators' decisions (the learning loop)."""

from moderation.models import Decision


def record_decision(decision: Decision) -> None:
    """Turn a decision into a training example and advance the retrain trigger (same transaction)."""


def withdraw_decision(decision: Decision) -> None:
    """Deactivate the example an undone decision produced (same transaction)."""
