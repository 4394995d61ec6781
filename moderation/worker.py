"""Per-process model for scoring: created lazily in each worker child, never in the parent.

TensorFlow run in a process that then forks leaves the children's predictions hanging, so nothing here touches
TensorFlow at import time and the `Scorer` is built on first use in the process that will use it. Each child
gets one intra-op and one inter-op thread: on a small machine two single-threaded children beat one child with two
threads, and their throughput stops swinging with whatever else runs on the host.
"""

import os

from celery.signals import worker_init, worker_process_init
from django.conf import settings

_scorer = None
_owner_pid: int | None = None


def configure_tensorflow_threads() -> None:
    """One TensorFlow thread per pool unless VIGIA_TF_THREADS says otherwise; before TensorFlow's first op."""
    os.environ.setdefault("VIGIA_TF_THREADS", "1")
    from classifier.runtime import configure_threads, quiet_tensorflow_logs

    quiet_tensorflow_logs()
    configure_threads()


def get_scorer():
    """This process's `classifier.scoring.Scorer`, created on first use.

    The owner pid guards against a scorer inherited through a fork: a child never reuses its parent's model.
    """
    global _scorer, _owner_pid
    if _scorer is None or _owner_pid != os.getpid():
        configure_tensorflow_threads()
        from classifier.scoring import Scorer

        _scorer = Scorer(settings.VIGIA_MODEL_REGISTRY)
        _owner_pid = os.getpid()
    return _scorer


@worker_process_init.connect
def _forget_inherited_scorer(**_kwargs) -> None:
    """A new child starts without a model; it loads one lazily when its first task arrives."""
    global _scorer, _owner_pid
    _scorer = None
    _owner_pid = None


@worker_init.connect
def _import_tensorflow_in_parent(**_kwargs) -> None:
    """Import TensorFlow in the parent, without running anything, so children inherit the loaded library.

    Importing is safe before a fork (running an operation is not); a replacement child, after a crash or
    `max_tasks_per_child`, then starts scoring in well under a second instead of paying the multi-second import
    again. VIGIA_PRELOAD_TENSORFLOW=0 turns this off.
    """
    if os.environ.get("VIGIA_PRELOAD_TENSORFLOW", "1") == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow  # noqa: F401
