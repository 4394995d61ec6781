"""Which model each scoring worker process actually serves, read from the reports their model watchers write.

The database and the registry pointer say which version is *active*; only the processes know what they
*serve*. Each scoring process (see `moderation.worker`) writes its `classifier.scoring.Scorer.status()` plus
`seen_at` as the JSON value of field `<hostname>:<pid>` of the Redis hash `vigia:serving`, after every switch and
on every heartbeat. Redis cannot expire single hash fields, so a process that died leaves its field behind: an
entry older than three of its heartbeats is ignored here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from moderation import clock
from moderation.broker import broker_client
from moderation.models import ModelVersion

SERVING_KEY = "vigia:serving"
SERVING_HEARTBEAT_SECONDS = 10.0
STALE_AFTER_HEARTBEATS = 3
# The rollout target: a promoted model serves in every worker process within this long of its activation.
ROLLOUT_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class ServingWorker:
    """One scoring process's latest report: the version it serves, since when, and the versions that failed."""

    host: str
    pid: int
    node: str
    version: str | None
    since: datetime | None
    load_seconds: float | None
    pointer_mtime: datetime | None
    failed: dict[str, str]
    age_seconds: float
    # What runs the model ("litert" or "keras"), why Keras where LiteRT could have, and the resident memory.
    runtime: str | None = None
    runtime_note: str | None = None
    rss_mb: float | None = None

    @property
    def name(self) -> str:
        """The process's field name in the `vigia:serving` hash, `<host>:<pid>`."""
        return f"{self.host}:{self.pid}"

    def as_dict(self) -> dict:
        """Return the entry as JSON (`serializers.ServingWorkerSerializer`), with ISO times."""
        data = asdict(self)
        for key in ("since", "pointer_mtime"):
            data[key] = data[key].isoformat() if data[key] else None
        data["age_seconds"] = round(self.age_seconds, 1)
        return data


@dataclass
class ServingReport:
    """The live entries, how many processes serve each version, and what an admin should look at."""

    workers: list[ServingWorker] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    active_version: str | None = None
    as_of_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict:
        """Return the report as JSON (`serializers.ServingSerializer`), the `serving` part of the health endpoint."""
        return {
            "active_version": self.active_version,
            "versions": self.versions,
            "as_of_seconds": None if self.as_of_seconds is None else round(self.as_of_seconds, 1),
            "workers": [worker.as_dict() for worker in self.workers],
            "warnings": self.warnings,
            **({"error": self.error} if self.error else {}),
        }


def _timestamp(value) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC) if value is not None else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _entry(name: str, raw: bytes | str, now: float) -> ServingWorker | None:
    """One hash field as a worker, or None when it is unreadable or its process stopped reporting."""
    try:
        data = json.loads(raw)
        seen_at = float(data["seen_at"])
    except (ValueError, KeyError, TypeError):
        return None
    heartbeat = data.get("heartbeat_seconds") or SERVING_HEARTBEAT_SECONDS
    age = now - seen_at
    if age > STALE_AFTER_HEARTBEATS * float(heartbeat):
        return None
    host, _, pid = name.rpartition(":")
    return ServingWorker(
        host=str(data.get("hostname") or host),
        pid=int(data.get("pid") or pid or 0),
        node=str(data.get("node") or ""),
        version=data.get("version"),
        since=_timestamp(data.get("since")),
        load_seconds=data.get("load_seconds"),
        pointer_mtime=_timestamp(data.get("pointer_mtime")),
        failed=dict(data.get("failed") or {}),
        age_seconds=max(0.0, age),
        runtime=data.get("runtime"),
        runtime_note=data.get("runtime_note"),
        rss_mb=data.get("rss_mb"),
    )


def serving_workers(*, client=None, key: str = SERVING_KEY, now: float | None = None, timeout: float = 1.0):
    """The live entries of `vigia:serving`, by host and pid. Redis errors are raised: none is not unknown."""
    client = client or broker_client(timeout)
    now = clock.now().timestamp() if now is None else now
    workers = []
    for name, raw in client.hgetall(key).items():
        worker = _entry(name.decode() if isinstance(name, bytes) else name, raw, now)
        if worker is not None:
            workers.append(worker)
    return sorted(workers, key=lambda worker: (worker.host, worker.pid))


def _processes(count: int) -> str:
    return f"{count} worker process" + ("" if count == 1 else "es")


def serving_report(*, client=None, key: str = SERVING_KEY, now: float | None = None, timeout: float = 1.0):
    """The versions page's and health's view of the rollout, with warnings; never raises for Redis trouble.

    Warnings: processes serving different versions, a process serving something other than the active version
    more than ROLLOUT_GRACE_SECONDS after its activation (with the load error when that is why), and no process
    reporting at all while a model is active.
    """
    import redis

    now = clock.now().timestamp() if now is None else now
    active = ModelVersion.objects.filter(is_active=True).values_list("version", "activated_at").first()
    active_version, activated_at = active if active else (None, None)
    report = ServingReport(active_version=active_version)
    try:
        report.workers = serving_workers(client=client, key=key, now=now, timeout=timeout)
    except (redis.RedisError, OSError) as error:
        report.error = f"The serving report is unavailable: {type(error).__name__}: {error}"
        return report

    counts: dict[str, int] = {}
    for worker in report.workers:
        label = worker.version or "no model"
        counts[label] = counts.get(label, 0) + 1
    # The active version first, then the others by how many processes serve them.
    report.versions = dict(sorted(counts.items(), key=lambda item: (item[0] != active_version, -item[1], item[0])))
    if report.workers:
        # The oldest report's age: the line never claims to be fresher than its stalest part.
        report.as_of_seconds = max(worker.age_seconds for worker in report.workers)
    elif active_version:
        report.warnings.append(
            f"No scoring worker has reported in the last {STALE_AFTER_HEARTBEATS * SERVING_HEARTBEAT_SECONDS:.0f} s."
        )

    if len(counts) > 1:
        spread = ", ".join(f"{version} in {_processes(count)}" for version, count in report.versions.items())
        report.warnings.append(f"Workers disagree: {spread}.")
    if active_version and activated_at is not None:
        elapsed = now - activated_at.timestamp()
        if elapsed > ROLLOUT_GRACE_SECONDS:
            for worker in report.workers:
                if worker.version == active_version:
                    continue
                line = (
                    f"{worker.name} serves {worker.version or 'no model'}, not the active {active_version}, "
                    f"{elapsed:.0f} s after its activation"
                )
                reason = worker.failed.get(active_version)
                report.warnings.append(line + (f": {active_version} failed to load ({reason})." if reason else "."))
    return report
