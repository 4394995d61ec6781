"""Per-process model for scoring: created in each worker child, never in the parent, and watched in the background.

TensorFlow run in a process that then forks leaves the children's predictions hanging, so nothing here touches
TensorFlow at import time and the `Scorer` is built in the process that will use it. Each scoring process gives
its model `VIGIA_SCORING_THREADS` threads (default one): on a small machine one single-threaded child per core
beats one child with two threads, and their throughput stops swinging with whatever else runs on the host.

A version with a checked LiteRT file is served by the LiteRT interpreter (`classifier.serving`; `VIGIA_RUNTIME`
chooses), and a child serving it never imports TensorFlow: it sits at a fraction of a TensorFlow child's resident
memory. The parent therefore preloads only what its children will run (`_preload_in_parent`).

A worker that consumes the `scoring` queue starts the scorer's watcher as soon as the process that scores
exists: each prefork child at `worker_process_init`, the single process of the solo and threads pools once the
worker is ready (they never fork). The watcher loads a promoted model within seconds even when no task arrives,
and reports what the process serves into the Redis hash `vigia:serving` (`selectors.serving` reads it). Other
workers (training) and the web keep building a scorer on first use, without a watcher.
"""

import contextlib
import json
import logging
import os
import socket
import time

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown
from django.conf import settings

from moderation.broker import broker_client
from moderation.outbox import INTERACTIVE_QUEUE
from moderation.selectors.serving import SERVING_HEARTBEAT_SECONDS, SERVING_KEY

logger = logging.getLogger(__name__)

SCORING_QUEUE = "scoring"
TRAINING_QUEUE = "training"
# Readers ignore an entry after three heartbeats; an entry this old belongs to a process long gone, and whichever
# worker reports next deletes it, so restarts (max_tasks_per_child, crashes) do not grow the hash for ever.
SERVING_PRUNE_SECONDS = 3600
# A status report must never hold up the watcher (which also notices the next promotion) for long.
SERVING_REDIS_TIMEOUT = 1.0

_scorer = None
_owner_pid: int | None = None
# Set by `worker_init` in a Celery worker's main process and inherited by its children.
_watch_scoring = False
_pool_forks = True
_worker_pid: int | None = None
_node_name = ""
_redis = None
_redis_pid: int | None = None
_report_failing = False


def configure_training_threads() -> None:
    """Set this process's TensorFlow threads for training from `VIGIA_TF_THREADS`, before its first operation.

    Unset, TensorFlow's own choice (every core), since one retrain at a time runs on the training queue. A scoring
    process never calls this: its `Scorer` sets `VIGIA_SCORING_THREADS` itself, and only if Keras serves.
    """
    from classifier.runtime import configure_threads, quiet_tensorflow_logs

    quiet_tensorflow_logs()
    configure_threads(settings.VIGIA_TF_THREADS)


def _may_watch_here() -> bool:
    """A scoring worker's process that scores: never the parent of a prefork pool, which forks afterwards."""
    return _watch_scoring and (not _pool_forks or os.getpid() != _worker_pid)


def get_scorer():
    """This process's `classifier.scoring.Scorer`, created on first use.

    The owner pid guards against a scorer inherited through a fork: a child never reuses its parent's model.
    In a scoring worker the watcher is started here as well (it is idempotent), which covers pools that send
    no per-process signal.
    """
    global _scorer, _owner_pid
    if _scorer is None or _owner_pid != os.getpid():
        from classifier.runtime import quiet_tensorflow_logs
        from classifier.scoring import Scorer

        quiet_tensorflow_logs()
        _scorer = Scorer(
            settings.VIGIA_MODEL_REGISTRY, runtime=settings.VIGIA_RUNTIME, threads=settings.VIGIA_SCORING_THREADS
        )
        _owner_pid = os.getpid()
    if _may_watch_here():
        _start_watching(_scorer)
    return _scorer


def _start_watching(scorer) -> None:
    scorer.watch(
        settings.VIGIA_MODEL_WATCH_SECONDS,
        publish_serving_status,
        heartbeat=SERVING_HEARTBEAT_SECONDS,
        identity={"hostname": socket.gethostname(), "pid": os.getpid(), "node": _node_name},
    )


# ---------------------------------------------------------------------------------------------------- report


def _redis_client():
    """A connection of this process (a socket inherited through a fork would be shared with the parent)."""
    global _redis, _redis_pid
    if _redis is None or _redis_pid != os.getpid():
        _redis = broker_client(SERVING_REDIS_TIMEOUT)
        _redis_pid = os.getpid()
    return _redis


def serving_field(status: dict) -> str:
    """Return the process's field name in the `vigia:serving` hash, `<hostname>:<pid>`."""
    return f"{status.get('hostname', '')}:{status.get('pid', '')}"


def publish_serving_status(status: dict) -> None:
    """Store `status` (from `Scorer.status()`) as this process's field of the `vigia:serving` hash.

    Redis hashes have no per-field expiry, so the entry carries `seen_at` and readers skip entries older than
    three heartbeats. Called from the watcher thread; a Redis outage is logged once and never reaches scoring.
    """
    global _report_failing
    import redis

    now = time.time()
    entry = {**status, "seen_at": now}
    try:
        client = _redis_client()
        pipe = client.pipeline(transaction=False)
        pipe.hset(SERVING_KEY, serving_field(status), json.dumps(entry))
        # Should every worker vanish, the whole report goes away by itself.
        pipe.expire(SERVING_KEY, SERVING_PRUNE_SECONDS)
        pipe.execute()
        _prune_departed(client, now)
    except (redis.RedisError, OSError) as error:
        if not _report_failing:
            logger.warning("cannot report the serving model to Redis (%s); scoring goes on", error)
        _report_failing = True
        return
    if _report_failing:
        logger.info("serving model reports reach Redis again")
    _report_failing = False


def _prune_departed(client, now: float) -> None:
    stale = []
    for field, raw in client.hgetall(SERVING_KEY).items():
        try:
            seen_at = float(json.loads(raw)["seen_at"])
        except (ValueError, KeyError, TypeError):
            seen_at = 0.0
        if now - seen_at > SERVING_PRUNE_SECONDS:
            stale.append(field)
    if stale:
        client.hdel(SERVING_KEY, *stale)


def _withdraw_serving_status() -> None:
    """Remove this process's entry when it stops, so the report drops it at once instead of after it expires."""
    scorer = _scorer if _owner_pid == os.getpid() else None
    if scorer is None or not _may_watch_here():
        return
    scorer.stop_watching(timeout=0)
    try:
        import redis

        _redis_client().hdel(SERVING_KEY, serving_field(scorer.status()))
    except (redis.RedisError, OSError) as error:
        logger.info("could not withdraw the serving report (%s); it expires by itself", error)


# ---------------------------------------------------------------------------------------------------- signals


def _pool_is_prefork(pool_cls) -> bool:
    from celery import concurrency
    from celery.concurrency.prefork import TaskPool as PreforkPool

    try:
        implementation = concurrency.get_implementation(pool_cls)
    except Exception:  # an unknown pool: assume it forks, the safe side for TensorFlow
        return True
    return isinstance(implementation, type) and issubclass(implementation, PreforkPool)


@worker_init.connect
def _note_scoring_worker(sender=None, **_kwargs) -> None:
    """Remember, in the worker's main process, whether it scores and whether its pool forks children."""
    global _watch_scoring, _pool_forks, _worker_pid, _node_name
    if sender is None:
        return
    _watch_scoring = SCORING_QUEUE in set(sender.app.amqp.queues.consume_from)
    if _watch_scoring:
        # Every scoring worker also answers the calls someone waits on (`POST /api/v1/score`), from a queue of
        # their own so a backlog of uploads never stands in front of them.
        sender.app.amqp.queues.select_add(INTERACTIVE_QUEUE)
    _pool_forks = _pool_is_prefork(sender.pool_cls)
    _worker_pid = os.getpid()
    _node_name = str(getattr(sender, "hostname", "") or "")


@worker_process_init.connect
def _forget_inherited_scorer(**_kwargs) -> None:
    """A new child starts without its parent's model; a scoring child starts loading its own in the background.

    The watcher thread loads the model, so this returns at once and the child reports ready well within
    `worker_proc_alive_timeout`; a task that arrives before the first load finishes waits for it.
    """
    global _scorer, _owner_pid
    _scorer = None
    _owner_pid = None
    if _may_watch_here():
        get_scorer()


@worker_ready.connect
def _watch_in_a_pool_without_children(**_kwargs) -> None:
    """The threads pool sends no per-process signal; it never forks, so its main process may load the model."""
    if _may_watch_here():
        get_scorer()


@worker_process_shutdown.connect
def _child_stops(**_kwargs) -> None:
    _withdraw_serving_status()


@worker_shutdown.connect
def _worker_stops(**_kwargs) -> None:
    _withdraw_serving_status()


def preload_plan(*, queues: set[str]) -> str | None:
    """What a worker consuming ``queues`` preloads in its parent: "tensorflow", "litert" or nothing (None).

    Training needs TensorFlow. Scoring needs it only when Keras serves: `VIGIA_RUNTIME=keras`, or an active
    version without a usable LiteRT file (then the children would import it anyway); otherwise the children run
    only the LiteRT interpreter, and TensorFlow in the parent would sit in every child's memory for nothing.
    Other queues run no model.
    """
    if TRAINING_QUEUE in queues:
        return "tensorflow"
    if SCORING_QUEUE not in queues:
        return None
    if settings.VIGIA_RUNTIME == "keras":
        return "tensorflow"
    from classifier.registry import Registry, RegistryError

    registry = Registry(settings.VIGIA_MODEL_REGISTRY)
    try:
        active = registry.active_version()
        usable = active is None or registry.litert_content(active, "scoring") is not None
    except (RegistryError, OSError):
        usable = False
    return "litert" if usable else "tensorflow"


@worker_init.connect
def _preload_in_parent(sender=None, **_kwargs) -> None:
    """Import what the children will run in the parent, without running anything, so children inherit it loaded.

    Importing is safe before a fork (running an operation is not); a replacement child, after a crash or
    `max_tasks_per_child`, then starts scoring in well under a second instead of paying the import again.
    `preload_plan` says what; VIGIA_PRELOAD_TENSORFLOW=0 turns this off.
    """
    if not settings.VIGIA_PRELOAD_TENSORFLOW or sender is None:
        return
    plan = preload_plan(queues=set(sender.app.amqp.queues.consume_from))
    if plan == "tensorflow":
        from classifier.runtime import quiet_tensorflow_logs

        quiet_tensorflow_logs()
        import tensorflow  # noqa: F401
    elif plan == "litert":
        from classifier.litert import interpreter_class

        with contextlib.suppress(Exception):  # not installed: the children serve with Keras and say why
            interpreter_class()
    logger.info("worker parent preloaded %s", plan or "nothing")
