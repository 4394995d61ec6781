"""How benchmarks report, the same way in every benchmark so their results compare.

Timestamped progress lines, percentiles and summaries, the machine, results JSON, and the learning loop's plot.

Every result records the machine it ran on, so that figures are never quoted without it, and is written
atomically: a run that is interrupted while writing leaves the previous results file whole.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path


def log(message: str) -> None:
    """One progress line, prefixed with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float | None]) -> dict:
    """Max, median and count of the values that are not None (None for both when there are none)."""
    present = [value for value in values if value is not None]
    if not present:
        return {"max": None, "median": None, "n": 0}
    return {"max": round(max(present), 3), "median": round(statistics.median(present), 3), "n": len(present)}


def machine_info() -> dict:
    """CPU model, cores, memory, OS, Python, and the load average when the run started (shared hosts skew speed).

    Hosts name their CPUs vaguely ("AMD EPYC"), and two generations under one name run the same model at different
    speeds with different arithmetic, so the CPU's family, model number and vector extensions are recorded too.
    """
    cpu = cpu_description(_read_cpuinfo())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu.pop("cpu") or platform.processor() or "unknown",
        **cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
    }


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_description(cpuinfo: str) -> dict:
    """The first processor's model name, family, model number and AVX-512 support, from /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block ends here; the others repeat it
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name", ""),
        "cpu_family": int(fields["cpu family"]) if fields.get("cpu family", "").isdigit() else None,
        "cpu_model": int(fields["model"]) if fields.get("model", "").isdigit() else None,
        "avx512": "avx512f" in flags,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded for the results file."""
    return [round(x, 2) for x in os.getloadavg()]


def write_json(path: Path, data: dict) -> None:
    """Write `data` as indented JSON to `path` through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # In the same directory, so the rename is atomic; `*.tmp` under bench/results is ignored by git.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_results(output: Path, results: dict) -> None:
    """Write the results file and print its headline figures (everything but details and machine)."""
    write_json(output, results)
    log(f"wrote {output}")
    print(json.dumps({k: v for k, v in results.items() if k not in ("details", "machine")}, indent=2))


def plot_loop_rounds(rounds: list[dict], path: Path, p_label: str, a_label: str, threshold: float) -> None:
    """The learning loop's rounds: the queue's precision and recall, retrained against never retrained, decisions
    spent; on the realistic stream (rounds with actioned figures) a second panel: actioned F1 of the loop and of
    both baselines at the loop's review budget, and each one's share of uploads sent to review."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["round"] for r in rounds]
    budgeted = all("static_budget_actioned_f1" in r for r in rounds)
    figure, axes = plt.subplots(1, 2 if budgeted else 1, figsize=(12 if budgeted else 7, 4.2), dpi=110)
    axis = axes[0] if budgeted else axes
    axis.plot(x, [r["precision"] for r in rounds], "o-", color="tab:blue", label="precision, retrained loop")
    axis.plot(x, [r["recall"] for r in rounds], "s-", color="tab:orange", label="recall, retrained loop")
    faded = {"alpha": 0.45, "linestyle": "--"}
    axis.plot(
        x, [r["static_precision"] for r in rounds], "o", color="tab:blue", label="precision, never retrained", **faded
    )
    axis.plot(
        x, [r["static_recall"] for r in rounds], "s", color="tab:orange", label="recall, never retrained", **faded
    )
    axis.axhline(0.9, color="grey", linewidth=0.8, linestyle=":")
    for r in rounds:
        axis.annotate(str(r["decisions"]), (r["round"], 0.02), ha="center", fontsize=7, color="grey")
    axis.set_ylim(0, 1.02)
    axis.set_xticks(x)
    axis.set_xlabel("retrain (grey: moderator decisions spent so far)")
    axis.set_ylabel(f"queue precision / recall at the review threshold ({threshold} first)")
    axis.set_title(f"Learning loop: {p_label} (prohibited) vs {a_label}, frozen test set", fontsize=10)
    axis.legend(loc="center right", fontsize=8)
    if budgeted:
        _plot_budget_panel(axes[1], rounds, x, threshold)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _plot_budget_panel(axis, rounds: list[dict], x: list[int], threshold: float) -> None:
    """Actioned F1 (solid, left axis) and review share of uploads (dotted, right axis) per round."""
    axis.plot(x, [r["actioned_f1"] for r in rounds], "o-", color="tab:green", label="F1, retrained loop")
    axis.plot(
        x, [r["static_budget_actioned_f1"] for r in rounds], "s-", color="tab:grey",
        label="F1, never retrained, the loop's review budget",
    )  # fmt: skip
    axis.plot(
        x, [r["static_actioned_f1"] for r in rounds], "s--", color="tab:grey", alpha=0.45,
        label=f"F1, never retrained at {threshold} (its own, larger budget)",
    )  # fmt: skip
    with_random = [r for r in rounds if "random_budget_actioned_f1" in r]
    if with_random:
        axis.plot(
            [r["round"] for r in with_random], [r["random_budget_actioned_f1"] for r in with_random], "^-",
            color="tab:purple", label="F1, random labelling, the loop's review budget",
        )  # fmt: skip
    plotted = [r[key] for r in rounds for key in ("actioned_f1", "static_budget_actioned_f1") if r.get(key)]
    axis.set_ylim(min(0.5, min(plotted, default=0.5) - 0.05), 1.02)
    axis.set_xticks(x)
    axis.set_xlabel("retrain")
    axis.set_ylabel("actioned F1 (auto-actions + confirmed in review)")
    axis.set_title("The same number of review slots on the test stream", fontsize=10)
    axis.legend(loc="lower left", fontsize=7)
    share = axis.twinx()
    share.plot(x, [r["review_share"] for r in rounds], ":", color="tab:green", label="review share, loop")
    share.plot(
        x, [r["static_review_share"] for r in rounds], ":", color="tab:grey", label="review share, never retrained"
    )
    share.set_ylim(0, max(0.5, max(r["static_review_share"] for r in rounds) * 1.2))
    share.set_ylabel("share of uploads sent to review (dotted)")
    share.legend(loc="lower right", fontsize=7)


def rollout_report() -> list[dict]:
    """For each promotion: whether any worker kept scoring with the model it replaced, read off the scores.

    Every score records the model version that produced it, so a score by the replaced model created after the
    promotion is a worker still serving the old model; the last one's lag bounds how long the switch took in
    every worker process that scored anything. The first score by the new model measures when it was first
    needed, which includes the benchmark's own pauses, so it is reported but is not the switch time.
    """
    from moderation.models import ModelVersion, Score

    promoted = list(ModelVersion.objects.filter(activated_at__isnull=False).order_by("activated_at"))
    report = []
    for previous, current in zip(promoted, promoted[1:], strict=False):
        after = Score.objects.filter(created_at__gte=current.activated_at)
        stale = after.filter(model_version=previous.version).order_by("-created_at")
        first_new = after.filter(model_version=current.version).order_by("created_at").first()
        last_stale = stale.first()
        report.append(
            {
                "version": current.version,
                "replaced": previous.version,
                "old_model_scores_after_promotion": stale.count(),
                "last_old_model_score_s": (
                    round((last_stale.created_at - current.activated_at).total_seconds(), 3) if last_stale else None
                ),
                "first_new_model_score_s": (
                    round((first_new.created_at - current.activated_at).total_seconds(), 3) if first_new else None
                ),
                "new_model_scores": after.filter(model_version=current.version).count(),
            }
        )
    return report


def holdout_near_duplicates() -> dict:
    """Holdout examples with a near-duplicate among the training examples: as each image's own hash would have
    split them (before near-duplicate groups), and as the groups did; and how many retrains moved there."""
    from moderation.models import AuditAction, AuditEntry
    from moderation.services.training.groups import holdout_with_training_copies

    return {
        "by_image_hash": holdout_with_training_copies(by_image_hash=True),
        "by_group": holdout_with_training_copies(),
        "moved_to_training": AuditEntry.objects.filter(action=AuditAction.EXAMPLE_MOVED_TO_TRAINING).count(),
    }
