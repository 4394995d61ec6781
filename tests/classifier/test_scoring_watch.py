"""The background watcher: a process switches to a promoted model with no task arriving, and says what it serves."""

import os
import threading
import time

import pytest

from classifier.scoring import Scorer
from tests.classifier.synthetic import image_bytes
from tests.classifier.trained import break_model, two_versions

# Generous: the watcher polls every few hundredths of a second, but a busy CI machine may be slow to load.
TIMEOUT = 60.0


def eventually(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def registry(tmp_path):
    registry = two_versions(tmp_path)
    registry.activate("v0001")
    return registry


@pytest.fixture
def scorers():
    """Scorers made by a test; their watchers are stopped afterwards so no thread outlives the test."""
    made: list[Scorer] = []

    def make(root) -> Scorer:
        scorer = Scorer(root)
        made.append(scorer)
        return scorer

    yield make
    for scorer in made:
        scorer.stop_watching(timeout=TIMEOUT)


def hold_loads_of(version: str, scorer: Scorer, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make `scorer` block while loading `version`: `loading` is set once it blocks, setting `release` lets it go."""
    loading, release = threading.Event(), threading.Event()
    real_verify = scorer.registry.verify

    def slow_verify(name):
        # Every load checks the release first, whichever runtime then serves it.
        if name == version:
            loading.set()
            release.wait(TIMEOUT)
        return real_verify(name)

    monkeypatch.setattr(scorer.registry, "verify", slow_verify)
    return loading, release


def watcher_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "model-watcher"]


def test_a_watched_scorer_switches_to_a_promoted_version_without_any_prediction(registry, scorers):
    scorer = scorers(registry.root)
    reports: list[dict] = []
    scorer.watch(0.05, reports.append, heartbeat=60, identity={"hostname": "host-a", "pid": 4242})

    # The first model is loaded in the background too: nothing has called predict or version.
    eventually(lambda: any(r["version"] == "v0001" for r in reports), "v0001 to be reported")
    activated_at = time.time()
    registry.activate("v0002")
    switch = eventually(lambda: next((r for r in reports if r["version"] == "v0002"), None), "v0002 to be reported")

    assert switch["hostname"] == "host-a" and switch["pid"] == 4242
    assert switch["since"] >= activated_at - 1
    assert switch["load_seconds"] >= 0
    assert switch["pointer_mtime"] == pytest.approx(os.stat(registry.active_file).st_mtime, abs=1e-3)
    assert switch["failed"] == {} and switch["heartbeat_seconds"] == 60
    assert scorer.status()["version"] == "v0002"
    assert scorer.predict([image_bytes("ok", 1)]).model_version == "v0002"


def test_a_broken_promotion_is_reported_and_the_old_model_keeps_serving(registry, scorers):
    scorer = scorers(registry.root)
    reports: list[dict] = []
    scorer.watch(0.05, reports.append, heartbeat=60)
    eventually(lambda: scorer.status()["version"] == "v0001", "v0001 to serve")

    break_model(registry, "v0002")
    registry.activate("v0002")

    failure = eventually(lambda: next((r for r in reports if "v0002" in r["failed"]), None), "the failure report")
    assert failure["version"] == "v0001"
    assert scorer.predict([image_bytes("ok", 1)]).model_version == "v0001"
    assert scorer.status()["version"] == "v0001"


def test_status_is_reported_again_on_every_heartbeat(registry, scorers):
    scorer = scorers(registry.root)
    reports: list[dict] = []
    scorer.watch(0.02, reports.append, heartbeat=0.1)
    eventually(lambda: len(reports) >= 4, "four reports of an unchanged version")
    assert {r["version"] for r in reports[1:]} == {"v0001"}


def test_a_failing_status_callback_does_not_stop_the_watcher(registry, scorers):
    scorer = scorers(registry.root)
    calls: list[str | None] = []

    def unreachable_store(status: dict) -> None:
        calls.append(status["version"])
        raise ConnectionError("store is down")

    scorer.watch(0.05, unreachable_store, heartbeat=60)
    eventually(lambda: "v0001" in calls, "a first report attempt")
    registry.activate("v0002")
    eventually(lambda: "v0002" in calls, "the switch to be reported despite earlier failures")
    assert scorer.status()["version"] == "v0002"


def test_watch_is_idempotent(registry, scorers):
    scorer = scorers(registry.root)
    before = len(watcher_threads())
    first = scorer.watch(0.05)
    assert scorer.watch(0.05) is first
    assert scorer.watch(1.0, print) is first
    assert len(watcher_threads()) == before + 1
    scorer.stop_watching(timeout=TIMEOUT)
    assert not first.is_alive()
    # Stopped is not running: a later call starts a new watcher.
    second = scorer.watch(0.05)
    assert second is not first and second.is_alive()


def test_predict_during_a_slow_load_answers_with_the_old_model(registry, scorers, monkeypatch):
    scorer = scorers(registry.root)
    assert scorer.predict([image_bytes("ok", 1)]).model_version == "v0001"

    loading, release = hold_loads_of("v0002", scorer, monkeypatch)
    reports: list[dict] = []
    scorer.watch(0.05, reports.append, heartbeat=60)
    registry.activate("v0002")
    assert loading.wait(TIMEOUT), "the watcher never started loading v0002"

    # predict runs in its own thread so that a predict blocked by the load fails the test instead of hanging it.
    answers: list[str] = []
    caller = threading.Thread(target=lambda: answers.append(scorer.predict([image_bytes("ok", 2)]).model_version))
    held_from = time.monotonic()
    caller.start()
    caller.join(TIMEOUT)
    assert not release.is_set() and answers == ["v0001"], "predict waited for the load or served the new model"
    held = time.monotonic() - held_from

    release.set()
    eventually(lambda: scorer.predict([image_bytes("ok", 3)]).model_version == "v0002", "the swap")
    switch = next(r for r in reports if r["version"] == "v0002")
    assert switch["load_seconds"] >= held


def test_a_task_that_refreshes_waits_for_the_watchers_load(registry, scorers, monkeypatch):
    # A scoring task calls refresh() and then picks the images the active model has not scored; answering that
    # with the old version while the new one loads would drop the re-scoring a promotion queues.
    scorer = scorers(registry.root)
    assert scorer.version == "v0001"
    loading, release = hold_loads_of("v0002", scorer, monkeypatch)
    scorer.watch(0.05)
    registry.activate("v0002")
    assert loading.wait(TIMEOUT)

    refreshed = threading.Event()
    waiter = threading.Thread(target=lambda: (scorer.refresh(), refreshed.set()))
    waiter.start()
    assert not refreshed.wait(0.3), "refresh() returned while the new version was still loading"
    release.set()
    assert refreshed.wait(TIMEOUT)
    waiter.join(TIMEOUT)
    assert scorer.version == "v0002"


def test_a_forked_child_has_no_watcher_and_unheld_locks(registry, scorers):
    scorer = scorers(registry.root)
    scorer.watch(0.05)
    eventually(lambda: scorer.status()["version"] == "v0001", "v0001 to serve")
    read_end, write_end = os.pipe()
    # Held by this process at the fork, as a watcher in the middle of a load would hold it.
    with scorer._load_lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which reports through the pipe
            try:
                checks = [
                    not watcher_threads(),
                    scorer._load_lock.acquire(timeout=5),
                    scorer._lock.acquire(timeout=5),
                ]
                thread = scorer.watch(60)
                checks.append(thread.is_alive() and len(watcher_threads()) == 1)
                os.write(write_end, bytes(int(ok) for ok in checks))
            finally:
                os._exit(0)
    os.close(write_end)
    _, exit_status = os.waitpid(pid, 0)
    answer = os.read(read_end, 16)
    os.close(read_end)
    assert os.waitstatus_to_exitcode(exit_status) == 0
    assert list(answer) == [1, 1, 1, 1], "child: [no inherited watcher, load lock free, lock free, own watcher]"
    assert scorer._watcher.is_alive()
