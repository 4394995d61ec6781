"""Per-process model for scoring: created lazily in each worker child, never in the parent.

TensorFlow run in a process that then forks leaves the children's predictions hanging, so nothing here touches
TensorFlow at import time and the `Scorer` is built on first use in the process that will use it. Each child
gets one intra-op and one inter-op thread: on a small machine two single-threaded children beat one child with two
threads, and their throughput stops swinging with whatever else runs on the host.
"""

import logging
import os

from celery.signals import worker_process_init
from django.conf import settings

logger = logging.getLogger(__name__)

_scorer = None
_owner_pid: int | None = None


def configure_tensorflow_threads() -> None:
    """Limit TensorFlow's thread pools; must run before TensorFlow executes its first operation here."""
    threads = int(os.environ.get("VIGIA_TF_THREADS", "1"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        # TensorFlow was already initialised in this process (e.g. a test ran a model first); keep its pools.
        logger.debug("TensorFlow threads already configured")


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
