"""How benchmarks report: timestamped progress lines, percentiles and summaries, the machine, results JSON.

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
    """CPU model, cores, memory, OS, Python, and the load average when the run started (shared hosts skew speed)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
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
