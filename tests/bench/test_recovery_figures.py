"""The fault benchmark's catch-up figures, taken from when each item was created and done."""

import pytest

from bench.harness.recovery import backlog_figures
from bench.harness.report import percentile


def test_the_backlog_ends_when_the_last_item_created_before_the_repair_is_done():
    items = [(90.0, 91.0), (95.0, 104.5), (99.0, 102.0), (101.0, 101.6), (103.0, 104.0)]
    figures = backlog_figures(items, repaired_at=100.0)
    assert figures["backlog_s"] == 4.5  # the item of 95.0 was done at 104.5
    assert figures["before_repair"] == 3 and figures["after_repair"] == 2
    assert figures["after_repair_max_s"] == 1.0 and figures["after_repair_p95_s"] == 0.98  # 0.6 and 1.0 s
    assert figures["not_done"] == 0


def test_a_backlog_done_before_the_repair_counts_zero_and_one_never_done_leaves_it_open():
    assert backlog_figures([(90.0, 92.0), (95.0, 96.0)], repaired_at=100.0)["backlog_s"] == 0.0
    open_backlog = backlog_figures([(90.0, 92.0), (95.0, None), (101.0, 102.0)], repaired_at=100.0)
    assert open_backlog["backlog_s"] is None and open_backlog["not_done"] == 1
    assert open_backlog["after_repair_p95_s"] == 1.0


def test_nothing_created_after_the_repair_gives_no_pace_figures():
    figures = backlog_figures([(90.0, 101.0)], repaired_at=100.0)
    assert figures["backlog_s"] == 1.0
    assert figures["after_repair_p95_s"] is None and figures["after_repair_max_s"] is None


def test_the_pace_figure_interpolates_between_ranks_like_every_other_benchmark():
    """Twenty items taking 1..20 s after the repair: p95 lies between the 19th and the 20th (19.05 s)."""
    items = [(100.0 + second, 100.0 + 2 * second) for second in range(1, 21)]
    assert backlog_figures(items, repaired_at=100.0)["after_repair_p95_s"] == 19.05


def test_the_linear_percentile():
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 95) == pytest.approx(19.05)
    assert percentile(values, 100) == 20.0
    assert percentile(values, 50) == 10.5
    assert percentile([3.0], 95) == 3.0
