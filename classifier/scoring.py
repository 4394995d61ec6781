"""Score images with the active model version, reloading safely when the active pointer changes.

A Celery child creates one Scorer and calls `predict` for each batch. Checking for a new version costs one
`stat` of the pointer file, so it happens on every call; a new version only replaces the serving one after it
loads (sha256, safe_mode) and passes a smoke prediction, otherwise the old model keeps serving.

Each version serves with the runtime `classifier.serving` picks: its checked LiteRT file when it has one (a process
that only ever serves LiteRT never imports TensorFlow), else the Keras model. Loading, the smoke test and the
hot switch below are the same for both.

A process that gets no task would otherwise keep the old model until its next task and pay the load then, so
`Scorer.watch` starts a background thread that refreshes every few seconds and reports what the process serves.
Loading happens outside the lock that guards the serving model: `predict` keeps answering with the old model
while a new one loads and is smoke-tested, and only the swap itself is serialised.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.embedding import traced_forward
from classifier.registry import Registry
from classifier.serving import ServedModel, load_served

logger = logging.getLogger(__name__)


class NoActiveModel(RuntimeError):
    """There is no active model version that loads (none activated yet, or only broken ones)."""


@dataclass(frozen=True)
class Prediction:
    """Per image, in order, the probability of each label, and the version that computed them."""

    model_version: str
    probabilities: list[dict[str, float]]


#: The model's inference pass as one traced function for any batch size (no per-call Keras overhead): the same
#: pass embedding uses, under the name serving code and benchmarks know it by.
compiled_forward = traced_forward


def smoke_batch(image_size: int) -> np.ndarray:
    """The smoke image, a blank white one, as a batch of one: every version must score it before it serves."""
    return np.full((1, image_size, image_size, 3), 255.0, dtype=np.float32)


def smoke_test(loaded, forward) -> None:
    """Raise unless one blank image yields a finite probability vector over the labels."""
    output = np.asarray(forward(smoke_batch(loaded.image_size)))
    if output.shape != (1, len(loaded.labels)):
        raise ValueError(f"smoke prediction has shape {output.shape}, expected (1, {len(loaded.labels)})")
    if not np.all(np.isfinite(output)) or abs(float(output.sum()) - 1.0) > 1e-3:
        raise ValueError("smoke prediction is not a probability distribution")


def resident_mb() -> float | None:
    """This process's resident memory in MiB, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


StatusCallback = Callable[[dict], None]

# Every Scorer of this process, so a fork can give the child's copies fresh locks (see `_after_fork_in_child`).
_scorers: weakref.WeakSet[Scorer] = weakref.WeakSet()


class Scorer:
    """The active model of a registry, loaded lazily once per process and optionally watched in the background.

    Two locks: `_lock` guards the serving model and its status and is held only for reads and the swap;
    `_load_lock` lets one thread at a time load a new version. A caller that already has a model to serve never
    waits for someone else's load, so a slow load does not stall scoring.
    """

    def __init__(self, registry_root: str | Path, *, runtime: str = "litert", threads: int | None = None):
        self.registry = Registry(registry_root)
        # "litert": a version's checked LiteRT file when it has one, else Keras; "keras": always Keras.
        self.runtime = runtime
        # Threads the serving model may use, in either runtime (None: the runtime's default).
        self.threads = threads
        self._loaded: ServedModel | None = None
        self._pointer_state: tuple | None = None
        self._failed: dict[str, str] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self._served: dict[str, Any] = dict.fromkeys(
            ("version", "since", "load_seconds", "pointer_mtime", "runtime", "runtime_note")
        )
        self._identity: dict[str, Any] = {}
        self._heartbeat: float | None = None
        self._watcher: threading.Thread | None = None
        self._watcher_pid: int | None = None
        self._stop = threading.Event()
        _scorers.add(self)

    def _stat_pointer(self) -> tuple | None:
        try:
            stat = os.stat(self.registry.active_file)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def refresh(self, wait: bool = True) -> bool:
        """Reload if the active pointer names another version; True when a new model now serves.

        An unchanged pointer costs one stat. A version that fails to load or to predict is remembered and not
        retried until the pointer is written again, so a broken release does not cost a reload per request.
        With `wait=False` a load already running in another thread (the watcher) is not waited for: the caller
        goes on with the model that serves now. Callers that must act on the newest pointer (a scoring task
        deciding which images the active model still has to score) keep the default and wait.
        """
        if self._stat_pointer() == self._pointer_state:
            return False
        before = self._loaded
        if not self._load_lock.acquire(blocking=wait):
            return False
        try:
            state = self._stat_pointer()
            if state == self._pointer_state:
                return self._loaded is not before
            version = self.registry.active_version() if state is not None else None
            with self._lock:
                self._failed.clear()
                serving = self._loaded.version if self._loaded is not None else None
                if version is None or version == serving:
                    self._pointer_state = state
                    return self._loaded is not before
            return self._try_load(version, state)
        finally:
            self._load_lock.release()

    def _try_load(self, version: str, state: tuple) -> bool:
        """Load and smoke-test `version` without holding `_lock`, then swap it in; the caller holds `_load_lock`."""
        started = time.monotonic()
        try:
            candidate = load_served(self.registry, version, self.runtime, self.threads)
            smoke_test(candidate, candidate.forward)
        except Exception as error:
            with self._lock:
                self._failed[version] = str(error)
                self._pointer_state = state
                kept = self._loaded.version if self._loaded else "none"
            logger.warning("model %s not activated in this process (%s); still serving %s", version, error, kept)
            return False
        seconds = time.monotonic() - started
        with self._lock:
            self._loaded = candidate
            self._pointer_state = state
            self._served = {
                "version": version,
                "since": time.time(),
                "load_seconds": round(seconds, 3),
                "pointer_mtime": state[1] / 1e9,
                "runtime": candidate.runtime,
                "runtime_note": candidate.note,
            }
        logger.info(
            "serving model %s with %s (loaded and checked in %.2f s)%s",
            version,
            candidate.runtime,
            seconds,
            f": {candidate.note}" if candidate.note else "",
        )
        return True

    def _current(self) -> ServedModel:
        """The model to use now, after switching if the pointer moved.

        Only a process with nothing to serve yet waits for a load in progress; otherwise the old model answers
        until the new one has been swapped in.
        """
        self.refresh(wait=self._loaded is None)
        with self._lock:
            loaded, failed = self._loaded, dict(self._failed)
        if loaded is None:
            reasons = "; ".join(f"{v}: {why}" for v, why in failed.items())
            raise NoActiveModel(
                f"no usable active model in {self.registry.root}" + (f" ({reasons})" if reasons else "")
            )
        return loaded

    @property
    def version(self) -> str:
        """The version that serves now (loading the active one first if need be)."""
        return self._current().version

    @property
    def labels(self) -> list[str]:
        """The serving model's labels, in the order of its outputs."""
        return list(self._current().labels)

    @property
    def prohibited(self) -> list[str]:
        """The serving model's prohibited labels."""
        return list(self._current().prohibited)

    def predict(self, images: Sequence[bytes | str | Path | np.ndarray]) -> Prediction:
        """Per image, {label: probability}, from one forward pass over the whole batch.

        Raises `classifier.images.ImageDecodeError` naming the first image that cannot be decoded.
        """
        from classifier.images import ImageDecodeError, decode_image

        loaded = self._current()
        if not images:
            return Prediction(model_version=loaded.version, probabilities=[])
        batch = np.empty((len(images), loaded.image_size, loaded.image_size, 3), dtype=np.float32)
        for i, image in enumerate(images):
            try:
                batch[i] = decode_image(image, loaded.image_size)
            except ImageDecodeError as error:
                raise ImageDecodeError(f"image {i}: {error}") from error
        output = np.asarray(loaded.forward(batch), dtype=np.float64)
        labels = loaded.labels
        return Prediction(
            model_version=loaded.version,
            probabilities=[{label: float(p) for label, p in zip(labels, row, strict=True)} for row in output],
        )

    # ------------------------------------------------------------------------------------------------ watcher

    def status(self) -> dict:
        """What this process serves, for a report that other processes read.

        `version` (None before the first load), `since` (wall clock of the switch), `load_seconds` (load and
        smoke test of that switch), `pointer_mtime` (the pointer file's mtime when the switch was noticed, i.e.
        roughly when the version was activated), `runtime` ("litert" or "keras") and `runtime_note` (why Keras
        serves a version that could have used LiteRT), `rss_mb` (this process's resident memory, what the runtime
        costs), `failed` (versions that would not load, with the reason),
        `heartbeat_seconds` (how often a watcher reports, so a reader can tell a dead process from a quiet
        one) and whatever identity the caller passed to `watch` (host, pid).
        """
        with self._lock:
            return {
                **self._served,
                "rss_mb": resident_mb(),
                "failed": dict(self._failed),
                "heartbeat_seconds": self._heartbeat,
                **self._identity,
            }

    def watch(
        self,
        interval: float,
        on_status: StatusCallback | None = None,
        *,
        heartbeat: float = 10.0,
        identity: Mapping[str, Any] | None = None,
    ) -> threading.Thread:
        """Refresh every `interval` seconds in a daemon thread, so a promotion serves without waiting for a task.

        `on_status(status())` is called after every switch or failed load and at least every `heartbeat`
        seconds, from the watcher thread; an exception it raises is logged, never propagated. One watcher per
        Scorer and process: calling again returns the running thread and keeps the first call's arguments.
        A forked child inherits no running watcher (threads do not survive a fork) and may start its own.
        """
        with self._lock:
            if self._watcher is not None and self._watcher_pid == os.getpid() and self._watcher.is_alive():
                return self._watcher
            self._identity = dict(identity or {})
            self._heartbeat = heartbeat
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._watch_loop,
                args=(max(0.01, interval), on_status, heartbeat, self._stop),
                name="model-watcher",
                daemon=True,
            )
            self._watcher, self._watcher_pid = thread, os.getpid()
            thread.start()
            return thread

    def stop_watching(self, timeout: float | None = None) -> None:
        """Stop the watcher thread (a running load finishes first); for tests and orderly shutdowns."""
        with self._lock:
            thread, self._watcher = self._watcher, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _watch_loop(self, interval: float, on_status: StatusCallback | None, heartbeat: float, stop) -> None:
        reported: tuple | None = None
        reported_at: float | None = None
        failing = False
        while not stop.is_set():
            try:
                self.refresh()
            except Exception:
                # The watcher must outlive a surprise (a registry on a flaky mount): the next tick tries again.
                logger.exception("model watcher: refresh of %s failed", self.registry.root)
            if on_status is not None:
                status = self.status()
                key = (status["version"], status["since"], tuple(sorted(status["failed"].items())))
                now = time.monotonic()
                if key != reported or reported_at is None or now - reported_at >= heartbeat:
                    # A report that fails is retried at the next heartbeat, not every tick: an unreachable
                    # store must not slow down noticing the next promotion.
                    reported, reported_at = key, now
                    try:
                        on_status(status)
                    except Exception as error:
                        if not failing:
                            logger.warning("model watcher: status report failed (%s); retrying", error)
                        failing = True
                    else:
                        if failing:
                            logger.info("model watcher: status reports work again")
                        failing = False
            stop.wait(interval)

    def _after_fork(self) -> None:
        """Give a forked child unheld locks and no watcher: a lock held by a parent thread is never released."""
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self._watcher = None
        self._watcher_pid = None
        self._stop = threading.Event()


def _after_fork_in_child() -> None:
    for scorer in list(_scorers):
        scorer._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
