"""TensorFlow process settings that the process owner opts into; nothing here runs at import time.

The library never decides how many threads TensorFlow uses: the owner of the process (the command line, the
Celery worker, a benchmark) knows how many processes share the machine, reads its own configuration and calls
`configure_threads` once, before TensorFlow's first op.
"""

from __future__ import annotations

import os

_configured = False


def configure_threads(threads: int | None = None) -> None:
    """Set TensorFlow's intra- and inter-op threads to ``threads`` (None or 0: TensorFlow's default).

    Celery runs one single-thread TensorFlow per child, which beats one process using both cores. TensorFlow
    only accepts this before its runtime starts, so a late call is ignored rather than failing the caller, and
    only the first call of a process counts.
    """
    global _configured
    if _configured:
        return
    _configured = True
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass


def quiet_tensorflow_logs() -> None:
    """Hide TensorFlow's C++ info lines (oneDNN notices) without disabling oneDNN, which would cost speed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
