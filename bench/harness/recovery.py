"""How long a repaired stack takes to catch up, from the moments the stack itself recorded (pure functions).

The fault benchmark checks its images only once the stream after a repair is over, so a figure taken there
says more about how long that stream runs than about the code. These figures come from timestamps instead: when
each accepted item was created and when it was done (an image scored, a webhook event first received).
Percentiles are `report.percentile`'s (linear interpolation), the same as every other benchmark's.
"""

from collections.abc import Iterable

from bench.harness.report import percentile


def backlog_figures(items: Iterable[tuple[float, float | None]], repaired_at: float) -> dict:
    """Catch-up figures for items given as (created, done or None) epoch seconds, around the repair.

    - `backlog_s`: from the repair until the last item created before it was done (0 when all were done before
      the repair; None while one of them is not done at all): how long the backlog the fault built up took.
    - `after_repair_p95_s` / `after_repair_max_s`: how long items created after the repair took, creation to
      done: whether the stack is back to its usual pace, not just caught up.
    - `before_repair` / `after_repair` / `not_done`: how many items each figure rests on; an item created after
      the repair and not done is left out of the pace figures and counted only in `not_done` (the benchmark waits
      until it is 0 before it takes them).
    """
    before: list[float | None] = []
    after: list[float] = []
    not_done = 0
    for created, done in items:
        if done is None:
            not_done += 1
        if created <= repaired_at:
            before.append(done)
        elif done is not None:
            after.append(done - created)
    backlog = None
    if before and all(done is not None for done in before):
        backlog = round(max(0.0, max(before) - repaired_at), 1)
    return {
        "backlog_s": backlog,
        "after_repair_p95_s": round(percentile(after, 95), 2) if after else None,
        "after_repair_max_s": round(max(after), 2) if after else None,
        "before_repair": len(before),
        "after_repair": len(after),
        "not_done": not_done,
    }
