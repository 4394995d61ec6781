"""What the fault benchmark breaks, as real parts of its own: a private PostgreSQL, a media disk it can fill, and a
stream of API uploads that keeps going whatever the desk answers.

- `PrivatePostgres`: `initdb` into a temporary directory and a `postgres` server on its own loopback port (run as
  the `postgres` user when this runs as root, as the server refuses root), stopped (fast shutdown) and started
  again by the benchmark. Nothing else uses it, so restarting it disturbs no one.
- `MediaDisk`: a small tmpfs mounted as MEDIA_ROOT (needs root; without it the disk-full fault is skipped and the
  results say so), filled to the last byte by one file and emptied again.
- `UploadStream`: single-photo listings posted through the real API at a steady rate from a thread, every answer
  recorded (time, status, listing and image ids), none retried: a refused upload is the client's to send again.

`train_initial_model` and `start_services` set up the desk as `make run` does (the load benchmark uses them too).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.stack import BIN, REPO, Services, celery_worker
from moderation.devstack.processes import ProcessSpec

#: The colours the benchmark's model learns: red photos are prohibited, blue ones allowed.
PROHIBITED_LABEL, ALLOWED_LABEL = "prohibited", "allowed"
COLORS = {PROHIBITED_LABEL: (200, 40, 40), ALLOWED_LABEL: (40, 60, 200)}


def colour_photo(label: str, seed: int, size: tuple[int, int] = (320, 240), fmt: str = "JPEG") -> bytes:
    """A distinct photo of roughly one colour (uniform noise around it): what a small model tells apart at once."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(COLORS[label], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    output = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(output, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return output.getvalue()


def write_training_folder(root: Path, per_label: int) -> Path:
    """A folder per label of `per_label` PNG photos each, as `manage.py import_training_set` reads it."""
    for offset, label in enumerate((PROHIBITED_LABEL, ALLOWED_LABEL)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_label):
            data = colour_photo(label, seed=10_000_000 + offset * 100_000 + index, size=(48, 48), fmt="PNG")
            (root / label / f"{index}.png").write_bytes(data)
    return root


def train_initial_model(work: Path) -> str:
    """Import a red/blue training set and train the first model in this process, as `make run` does once."""
    from django.core.management import call_command

    from moderation.selectors.models import active_model

    folder = write_training_folder(work / "initial-set", per_label=40)
    call_command("import_training_set", str(folder), "--prohibited", PROHIBITED_LABEL, verbosity=0)
    call_command("retrain", verbosity=0)
    return active_model().version


def start_services(args, env: dict[str, str], work: Path) -> Services:
    """What `make run` starts, with the production settings: web, scoring, training and webhooks workers, beat."""
    services = Services(env, work / "logs")
    services.start("worker", celery_worker("scoring,default", args.children, "faults-scoring@%h", "warning"))
    services.start("training", celery_worker("training", 1, "faults-training@%h", "warning"))
    hooks = celery_worker("webhooks", 4, "faults-webhooks@%h", "warning", pool="threads")
    hooks_env = {**env, "VIGIA_PRELOAD_TENSORFLOW": "0"}
    services.supervisor.start_logged(ProcessSpec("webhooks", hooks, hooks_env, REPO), work / "logs/webhooks.log")
    beat = [str(BIN / "celery"), "-A", "moderation", "beat", "-l", "warning"]
    services.start("beat", [*beat, "-S", "django_celery_beat.schedulers:DatabaseScheduler"])
    services.start_web(args.web_workers, "-k", "gthread", "--threads", "4", "--timeout", "120")
    return services


# ---------------------------------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries installed (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise SystemExit("No PostgreSQL server binaries under /usr/lib/postgresql/*/bin/")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A PostgreSQL server of this run only: its data in a temporary directory, its own port, trust on loopback."""

    def __init__(self, port: int):
        self.port = port
        self.bin = postgres_bin()
        self.directory = Path(tempfile.mkdtemp(prefix="vigia-faults-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.process: subprocess.Popen | None = None
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    def url(self, database: str) -> str:
        """A database URL on this server."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str], **options) -> subprocess.Popen:
        return subprocess.Popen(argv, user=self.user, cwd=self.directory, start_new_session=True, **options)

    def init(self) -> None:
        """Create the cluster (no password: trust, on loopback only)."""
        argv = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        process = self._run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, error = process.communicate(timeout=120)
        if process.returncode:
            raise SystemExit(f"initdb failed: {error.decode(errors='replace')[-2000:]}")

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it accepts connections."""
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        with open(self.log, "ab") as log:
            self.process = self._run(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"postgres exited at start; see {self.log}")
            if self.answers():
                return
            time.sleep(0.2)
        raise SystemExit(f"postgres did not accept connections within {timeout:.0f} s; see {self.log}")

    def answers(self) -> bool:
        """Whether the server accepts a connection now."""
        import psycopg

        try:
            options = {"host": "127.0.0.1", "port": self.port, "user": "postgres", "dbname": "postgres"}
            psycopg.connect(**options, connect_timeout=2).close()
            return True
        except psycopg.Error:
            return False

    def stop(self, timeout: float = 60) -> None:
        """Fast shutdown (SIGINT: open transactions are rolled back, every client is disconnected)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def remove(self) -> None:
        """Stop the server and delete its data."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- media disk


class MediaDisk:
    """MEDIA_ROOT on a small tmpfs of its own, so that the benchmark can fill it for real; `None` when not root."""

    def __init__(self, path: Path, size: str = "256m"):
        self.path = Path(path)
        self.size = size
        self.mounted = False
        self.filler = self.path / "filler.bin"
        self.why_not = ""

    def mount(self) -> bool:
        """Mount the tmpfs; False (with `why_not`) when the system does not allow it."""
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            self.why_not = "mounting a tmpfs needs root"
            return False
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            self.why_not = f"mount failed: {result.stderr.strip()}"
            return False
        self.mounted = True
        return True

    def fill(self) -> int:
        """Write one file until the disk has no byte left (unbuffered, down to single pages); returns its size."""
        written = 0
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for block in (1 << 20, 1 << 16, 4096):
                chunk = b"\0" * block
                while True:
                    try:
                        written += os.write(descriptor, chunk)
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(descriptor)
        return written

    def free(self) -> None:
        """Remove the filler file: the disk has room again."""
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        """Unmount (lazily, should a process still hold a file)."""
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False


# ---------------------------------------------------------------------------------------------------- stream


@dataclass
class Answer:
    """One upload of the stream and what the API said."""

    at: float
    status: int
    listing: int | None = None
    images: list[int] = field(default_factory=list)
    error: str = ""


class UploadStream:
    """Single-photo listings `prefix-<n>`, `rate` per second from a few threads, until `stop()`."""

    def __init__(self, base: str, token: str, prefix: str, rate: float, threads: int = 4, seed: int = 0):
        self.base, self.token, self.prefix, self.rate = base, token, prefix, rate
        self.threads = threads
        self.seed = seed
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> UploadStream:
        """Start posting in the background."""
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        """Stop posting, wait for the uploads in flight, and return every answer in the order they were sent."""
        self._stop.set()
        self._thread.join()
        return sorted(self.answers, key=lambda answer: answer.at)

    def _send(self, session, index: int) -> None:
        label = PROHIBITED_LABEL if index % 4 == 0 else ALLOWED_LABEL
        data = colour_photo(label, seed=self.seed + index)
        started = time.time()
        try:
            response = session.post(
                f"{self.base}/api/v1/listings",
                data={"external_id": f"{self.prefix}-{index}", "title": "fault stream"},
                files=[("images", (f"{index}.jpg", data, "image/jpeg"))],
                headers={"Authorization": f"Token {self.token}"},
                timeout=60,
            )
        except Exception as error:  # the web server refused or dropped the connection: not accepted
            answer = Answer(at=started, status=0, error=f"{type(error).__name__}: {error}"[:300])
        else:
            answer = Answer(at=started, status=response.status_code)
            if response.status_code in (200, 201):
                body = response.json()
                answer.listing = body["id"]
                answer.images = [image["id"] for image in body["images"]]
            else:
                answer.error = response.text[:300]
        with self._lock:
            self.answers.append(answer)

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import requests

        local = threading.local()

        def send(index: int) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            self._send(local.session, index)

        with ThreadPoolExecutor(self.threads) as pool:
            origin = time.monotonic()
            index = 0
            while not self._stop.is_set():
                delay = origin + index / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                pool.submit(send, index)
                index += 1
