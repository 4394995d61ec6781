"""Faults for delivery tests, loaded into a real worker with `celery worker --include tests.moderation.worker_faults`.

The worker's scorer is wrapped; what it does is read on every forward pass from the JSON file named by env
`VIGIA_TEST_FAULTS`, so a running worker can be given new faults by the test:

- `log`: a file that gets one line per forward pass: `<pid> <batch size>`.
- `hold_once`: a marker path. The first forward pass writes its pid there and sleeps, so the test can SIGKILL
  the child in the middle of a batch; later passes (marker present) run normally. `hold_seconds` (60) is how
  long it sleeps.
- `poison`: sha256 digests of stored images that kill the process (SIGKILL) whenever they are in the batch.
- `modules`: a file that gets one JSON line per forward pass, after it: the pid, the version and runtime that
  served it, the process's resident memory and whether `tensorflow` is among its loaded modules.

Nothing here is imported by the application itself.
"""

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from moderation import worker

_real_get_scorer = worker.get_scorer


def _faults() -> dict:
    path = os.environ.get("VIGIA_TEST_FAULTS")
    if not path or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text() or "{}")


class FaultyScorer:
    def __init__(self, scorer):
        self._scorer = scorer

    def __getattr__(self, name):
        return getattr(self._scorer, name)

    @property
    def version(self):
        return self._scorer.version

    @property
    def prohibited(self):
        return self._scorer.prohibited

    def predict(self, images):
        faults = _faults()
        if faults.get("log"):
            with open(faults["log"], "a") as log:
                log.write(f"{os.getpid()} {len(images)}\n")
        hold = faults.get("hold_once")
        if hold and not Path(hold).exists():
            staging = Path(f"{hold}.tmp")
            staging.write_text(str(os.getpid()))
            staging.rename(hold)
            time.sleep(faults.get("hold_seconds", 60))
        poison = set(faults.get("poison", []))
        if poison and any(hashlib.sha256(bytes(data)).hexdigest() in poison for data in images):
            os.kill(os.getpid(), signal.SIGKILL)
        prediction = self._scorer.predict(images)
        if faults.get("modules"):
            status = self._scorer.status()
            line = {
                "pid": os.getpid(),
                "version": prediction.model_version,
                "runtime": status.get("runtime"),
                "rss_mb": status.get("rss_mb"),
                "tensorflow": "tensorflow" in sys.modules,
            }
            with open(faults["modules"], "a") as log:
                log.write(json.dumps(line) + "\n")
        return prediction


def get_scorer():
    return FaultyScorer(_real_get_scorer())


worker.get_scorer = get_scorer
