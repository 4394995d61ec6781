"""TensorFlow process settings that callers opt into; nothing here runs at import time."""

from __future__ import annotations

import os

_configured = False


def configure_threads(threads: int | None = None) -> None:
    """Set TensorFlow's intra- and inter-op threads from `threads` or env VIGIA_TF_THREADS (unset: TF default).

    Celery runs one single-thread TensorFlow per child, which beats one process using both cores. TensorFlow
    only accepts this before its runtime starts, so a late call is ignored rather than failing the caller.
    """
    global _configured
    if _configured:
        return
    if threads is None:
        raw = os.environ.get("VIGIA_TF_THREADS", "").strip()
        threads = int(raw) if raw else None
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
