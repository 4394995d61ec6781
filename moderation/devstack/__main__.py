"""`python -m moderation.devstack with-redis -- COMMAND ...`: run COMMAND with a Redis that answers.

`make test` runs pytest this way (the Makefile's `WITH_REDIS`), so a fresh machine without Redis can run the
suite. No Django here: the Redis must exist before any settings are loaded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from moderation.devstack.redis import redis_for_run

USAGE = "usage: python -m moderation.devstack with-redis -- COMMAND [ARGS...]"
REPO = Path(__file__).resolve().parents[2]


def launch_environ() -> dict[str, str]:
    """The environment this process was started with, before any import changed it.

    Importing the `moderation` package sets `DJANGO_SETTINGS_MODULE` (Celery's app module does), and handing that
    to a command such as pytest would override the test settings named in pyproject.toml.
    """
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {os.fsdecode(key): os.fsdecode(value) for key, value in pairs}


def with_redis(argv: list[str]) -> int:
    """Run COMMAND with `REDIS_URL` set to a Redis that answers and return its exit code unchanged.

    Uses `REDIS_URL` when it answers; otherwise starts an embedded server, exports its URL to COMMAND and stops
    it afterwards.
    """
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    var_dir = Path(os.environ.get("VIGIA_VAR_DIR", REPO / "var"))

    def log(message: str) -> None:
        print(f"devstack | {message}", file=sys.stderr)

    with redis_for_run(os.environ.get("REDIS_URL"), var_dir, log=log) as (url, _embedded):
        child = subprocess.Popen(argv, env={**launch_environ(), "REDIS_URL": url})
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()


def main(argv: list[str] | None = None) -> int:
    """Dispatch the command line's first word (only `with-redis` exists)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["with-redis"]:
        return with_redis(argv[1:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
