"""The paired bootstrap behind the promotion gate: changes between two models scored on the same images."""

import math

import numpy as np
import pytest

from classifier.comparison import paired_changes


def outcomes(flagged, prohibited, weights=None, scores=None, keys=None) -> dict:
    """Per-image outcomes as `evaluate_model(..., keep_outcomes=True)` returns them."""
    n = len(flagged)
    return {
        "keys": keys if keys is not None else [f"sha{i}" for i in range(n)],
        "prohibited": list(prohibited),
        "flagged": list(flagged),
        # Unless given, scores rank exactly as the flags do (ties broken by position).
        "scores": scores if scores is not None else [0.5 + 0.4 * flag - 0.001 * i for i, flag in enumerate(flagged)],
        "weights": weights if weights is not None else [1.0] * n,
    }


# Twelve prohibited images and twelve allowed ones.
PROHIBITED = [True] * 12 + [False] * 12


def test_a_candidate_that_flags_exactly_the_same_images_has_no_change_and_no_noise():
    flagged = [True] * 8 + [False] * 4 + [True] * 3 + [False] * 9
    active = outcomes(flagged, PROHIBITED)
    candidate = outcomes(flagged, PROHIBITED)
    assert paired_changes(active, candidate) == {"recall": (0.0, 0.0), "precision": (0.0, 0.0), "auc": (0.0, 0.0)}


def test_a_candidate_that_catches_more_prohibited_images_gains_recall_with_a_finite_error():
    allowed_flags = [True] * 3 + [False] * 9
    active = outcomes([True] * 6 + [False] * 6 + allowed_flags, PROHIBITED)
    candidate = outcomes([True] * 10 + [False] * 2 + allowed_flags, PROHIBITED)
    changes = paired_changes(active, candidate)
    change, error = changes["recall"]
    assert change == pytest.approx(10 / 12 - 6 / 12)
    assert math.isfinite(error) and 0 < error < change
    # Four more true flags and no more false ones: precision rises from 6 / 9 to 10 / 13.
    assert changes["precision"][0] == pytest.approx(10 / 13 - 6 / 9)
    assert changes["auc"][0] > 0


def test_weights_count_each_image_as_many_times_as_it_weighs():
    flagged_before = [True, False, False, False]
    flagged_after = [True, True, False, False]
    prohibited = [True, True, True, False]
    weighted = paired_changes(
        outcomes(flagged_before, prohibited, weights=[1, 3, 1, 1]),
        outcomes(flagged_after, prohibited, weights=[1, 3, 1, 1]),
    )
    # The newly caught image weighs 3 of the 5 prohibited weight.
    assert weighted["recall"][0] == pytest.approx(3 / 5)


def test_outcomes_of_different_images_cannot_be_paired():
    flagged = [True, False, True, False]
    prohibited = [True, True, False, False]
    active = outcomes(flagged, prohibited)
    assert paired_changes(active, outcomes(flagged, prohibited, keys=["a", "b", "c", "d"])) is None
    assert paired_changes(active, outcomes(flagged[:3], prohibited[:3])) is None
    assert paired_changes(outcomes([], []), outcomes([], [])) is None


def test_undefined_figures_are_none():
    # Nothing prohibited: recall and AUC are undefined; nothing flagged by the candidate: so is its precision.
    changes = paired_changes(outcomes([True, False], [False, False]), outcomes([False, False], [False, False]))
    assert changes == {"recall": None, "precision": None, "auc": None}


def test_the_bootstrap_is_seeded_so_a_verdict_can_be_repeated():
    rng = np.random.default_rng(7)
    prohibited = list(rng.random(60) < 0.4)
    weights = list(rng.uniform(0.5, 4.0, 60))
    active = outcomes(list(rng.random(60) < 0.5), prohibited, weights, scores=list(rng.random(60)))
    candidate = outcomes(list(rng.random(60) < 0.5), prohibited, weights, scores=list(rng.random(60)))
    first = paired_changes(active, candidate, seed=3)
    assert paired_changes(active, candidate, seed=3) == first
    other = paired_changes(active, candidate, seed=4)
    # Another seed draws other resamples: the same changes, other (but similar) standard errors.
    for key in ("recall", "precision", "auc"):
        assert other[key][0] == first[key][0]
        assert other[key][1] != first[key][1]
        assert other[key][1] == pytest.approx(first[key][1], rel=0.25)


def test_the_bootstrap_error_is_close_to_the_analytic_standard_error_of_a_paired_ratio():
    prohibited = [True, True, True, True, False, False]
    weights = [1, 1, 1, 2, 1, 1]
    active = outcomes([True, True, False, False, True, False], prohibited, weights)
    candidate = outcomes([True, False, True, True, False, True], prohibited, weights)
    changes = paired_changes(active, candidate)
    # Weighted recall 2/5 -> 4/5; precision 2/3 -> 4/5 (the candidate flags weights 1 + 1 + 2 + 1).
    assert changes["recall"][0] == pytest.approx(2 / 5)
    assert changes["precision"][0] == pytest.approx(4 / 5 - 2 / 3)
    gains = [(1, 0.0), (1, -1.0), (1, 1.0), (2, 1.0)]
    analytic = (sum(w**2 * (g - 0.4) ** 2 for w, g in gains)) ** 0.5 / 5
    assert changes["recall"][1] == pytest.approx(analytic, rel=0.35)
