"""`manage.py rundesk`: the whole desk on one machine, as `make run` starts it.

Set-up steps run in the foreground (their output and the training progress bar go straight to the terminal, and
Ctrl-C interrupts them); then the long-running processes start under a supervisor that prefixes their output and
stops all of them, the embedded Redis included, on Ctrl-C or SIGTERM. Every step is idempotent and cheap when
already done, so a second start does not retrain or reload anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from django.conf import settings
from django.core.management import get_commands
from django.core.management.base import BaseCommand, CommandError

from moderation.devstack.processes import ProcessSpec
from moderation.devstack.redis import redis_for_run
from moderation.devstack.supervisor import Supervisor

DEMO_CLASSES = ("Pullover", "Coat")
DEMO_PROHIBITED = "Pullover"
DEMO_LISTINGS = [
    ("demo-1", "Chunky knit pullover, barely worn", "Warm wool blend, size M. Smoke-free home.", ["Pullover"]),
    ("demo-2", "Winter coat with hood", "Long padded coat, size L, two zip pockets.", ["Coat"]),
    ("demo-3", "Two sweaters, one price", "Selling both together, see photos.", ["Pullover", "Pullover"]),
    ("demo-4", "Rain coat and a jumper", "Moving out, everything must go.", ["Coat", "Pullover"]),
    ("demo-5", "Classic trench coat", "Beige, belted, dry-cleaned last month.", ["Coat"]),
    ("demo-6", "Oversized crew-neck", "Soft cotton, fits S to L.", ["Pullover"]),
]


def read_active_version(registry: Path) -> str | None:
    """The registry's active version, read from its `active` pointer file without loading TensorFlow.

    The supervisor only needs to know whether a model is active; importing the classifier here would cost
    seconds and hundreds of megabytes in a process that never scores anything.
    """
    try:
        version = (Path(registry) / "active").read_text().strip()
    except OSError:
        return None
    return version if version and (Path(registry) / version).is_dir() else None


def has_images(directory: Path) -> bool:
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    return Path(directory).is_dir() and any(p.suffix.lower() in suffixes for p in Path(directory).rglob("*"))


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def multipart_body(fields: dict[str, str], files: list[tuple[str, Path]]) -> tuple[bytes, str]:
    """Encode a multipart/form-data body with the standard library (no extra client dependency)."""
    boundary = f"vigia-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files:
        content_type = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        header = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(header.encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def http_json(url: str, token: str | None = None, data: bytes | None = None, content_type: str | None = None):
    """One request; returns (status, parsed JSON or text). HTTP errors are answers too, not exceptions."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        request.add_header("Authorization", f"Token {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")[:200]


class Command(BaseCommand):
    help = (
        "Run the whole desk: migrate, Redis (REDIS_URL or an embedded one), a trained model, demo accounts, "
        "Celery workers and beat, the web server and demo listings. Ctrl-C stops everything it started."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="Address to serve on.")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="Port to serve on.")
        parser.add_argument(
            "--per-class", type=int, default=300, help="Fashion-MNIST training images per class for the first model."
        )
        parser.add_argument("--no-demo", action="store_true", help="Skip demo accounts and demo listings.")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers when DEBUG is off.")

    # Set-up -----------------------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.stdout.write(f"desk     | {message}")
        self.stdout.flush()

    def run_step(self, argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
        """Run one set-up step in the foreground; a failure stops the start with the step's name."""
        self.say(what)
        result = subprocess.run(
            argv, cwd=settings.BASE_DIR, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise CommandError(f"{what} failed (exit {result.returncode}); see the output above.")

    def manage(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]

    def require_command(self, name: str) -> bool:
        if name in get_commands():
            return True
        self.say(f"warning: `manage.py {name}` is not available in this checkout; skipping that step")
        return False

    def ensure_model(self, env: dict[str, str], per_class: int) -> None:
        """Make sure a model is active: on first start export Fashion-MNIST and train one (with a progress bar)."""
        registry = Path(settings.VIGIA_MODEL_REGISTRY)
        data = Path(settings.VIGIA_TRAINING_DATA)
        active = read_active_version(registry)
        trained_now = False
        if active:
            self.say(f"Active model {active} in {registry}")
        else:
            if not has_images(data):
                self.run_step(
                    [
                        sys.executable,
                        "-m",
                        "classifier",
                        "export-fashion-mnist",
                        "--out",
                        str(data),
                        "--classes",
                        ",".join(DEMO_CLASSES),
                        "--split",
                        "train",
                        "--per-class",
                        str(per_class),
                    ],
                    f"Exporting {per_class} Fashion-MNIST photos per class into {data}",
                    env,
                )
            self.run_step(
                [
                    sys.executable,
                    "-m",
                    "classifier",
                    "train",
                    "--data",
                    str(data),
                    "--registry",
                    str(registry),
                    "--prohibited",
                    DEMO_PROHIBITED,
                    "--backbone",
                    settings.VIGIA_BACKBONE,
                    "--activate",
                ],
                f"Training the first model ({settings.VIGIA_BACKBONE}, {DEMO_PROHIBITED} prohibited)",
                env,
            )
            active = read_active_version(registry)
            if not active:
                raise CommandError(f"Training finished but no model is active in {registry}.")
            trained_now = True
        if self.require_command("sync_models"):
            self.run_step(self.manage("sync_models"), "Mirroring the model registry into the database", env)
        wants_import = trained_now or not self.initial_set_imported()
        if wants_import and has_images(data) and self.require_command("import_training_set"):
            self.run_step(
                self.manage("import_training_set", str(data), "--prohibited", DEMO_PROHIBITED),
                f"Importing the training set {data}",
                env,
            )

    def initial_set_imported(self) -> bool:
        from moderation.models import ExampleSource, TrainingExample

        return TrainingExample.objects.filter(source=ExampleSource.INITIAL).exists()

    def demo_credentials(self) -> dict:
        path = Path(settings.VAR_DIR) / "demo-credentials.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    # Demo listings ----------------------------------------------------------------------------------------

    def demo_listings_needed(self) -> bool:
        from moderation.models import Listing

        return not Listing.objects.filter(external_id__startswith="demo-").exists()

    def prepare_demo_photos(self, env: dict[str, str]) -> Path:
        photos = Path(settings.VAR_DIR) / "demo-photos"
        if not has_images(photos):
            self.run_step(
                [
                    sys.executable,
                    "-m",
                    "classifier",
                    "export-fashion-mnist",
                    "--out",
                    str(photos),
                    "--classes",
                    ",".join(DEMO_CLASSES),
                    "--split",
                    "test",
                    "--per-class",
                    "6",
                ],
                "Exporting Fashion-MNIST test photos for the demo listings",
                env,
            )
        return photos

    def load_demo_listings(self, supervisor: Supervisor, base_url: str, token: str, photos: Path) -> None:
        """Post the demo listings through the real API once the server answers, then report their routing.

        Runs in a thread next to the supervisor, so every failure is logged and ends the thread, never the desk.
        """

        def log(message: str) -> None:
            supervisor.log("demo", message)

        if not self.wait_for_server(supervisor, base_url):
            if not supervisor.stopping:
                log("the web server did not answer within 120 s; no demo listings loaded")
            return
        try:
            created = self.post_demo_listings(base_url, token, photos, log)
            self.follow_demo_listings(supervisor, base_url, token, created, log)
        except OSError as error:
            if not supervisor.stopping:
                log(f"demo listings stopped: {error}")

    def wait_for_server(self, supervisor: Supervisor, base_url: str, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while not supervisor.stopping and time.monotonic() < deadline:
            try:
                http_json(f"{base_url}/api/v1/health")
                return True
            except OSError:
                time.sleep(0.5)
        return False

    def post_demo_listings(self, base_url: str, token: str, photos: Path, log) -> list[int]:
        pools = {label: sorted((photos / label).glob("*")) for label in DEMO_CLASSES}
        created: list[int] = []
        for external_id, title, description, labels in DEMO_LISTINGS:
            files = [("images", pools[label].pop()) for label in labels if pools.get(label)]
            body, content_type = multipart_body(
                {"external_id": external_id, "title": title, "description": description}, files
            )
            status, answer = http_json(f"{base_url}/api/v1/listings", token, body, content_type)
            if status == 201 and isinstance(answer, dict):
                created.append(answer["id"])
                log(f"POST /api/v1/listings {external_id}: 201, listing {answer['id']}, {len(files)} image(s)")
            else:
                log(f"POST /api/v1/listings {external_id}: {status} {answer}")
        return created

    def follow_demo_listings(self, supervisor, base_url: str, token: str, created: list[int], log) -> None:
        pending = set(created)
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline and not supervisor.stopping:
            time.sleep(3)
            for listing_id in sorted(pending):
                status, answer = http_json(f"{base_url}/api/v1/listings/{listing_id}", token)
                if status != 200 or not isinstance(answer, dict):
                    continue
                images = answer.get("images", [])
                if images and all(image.get("status") != "pending" for image in images):
                    pending.discard(listing_id)
                    statuses = ", ".join(str(image.get("status")) for image in images)
                    log(f"listing {listing_id} ({answer.get('external_id')}): {answer.get('status')} [{statuses}]")
        if pending and not supervisor.stopping:
            log(f"listings still waiting for a score: {sorted(pending)} (is a model active and the worker up?)")
        elif created and not pending:
            log(f"all demo listings scored; flagged photos are waiting in the queue at {base_url}/")

    # Main -------------------------------------------------------------------------------------------------

    def handle(self, *args, **options):
        host, port = options["host"], options["port"]
        if not port_is_free(host, port):
            raise CommandError(
                f"Port {port} on {host} is in use; stop what uses it or set PORT=... (make run PORT=8001)."
            )
        # Until the supervisor takes over, SIGTERM behaves like Ctrl-C so set-up steps unwind and clean up.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        var_dir = Path(settings.VAR_DIR)
        var_dir.mkdir(parents=True, exist_ok=True)
        child_env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}

        self.run_step(self.manage("migrate", "--noinput", "-v", "0"), "Migrating the database", child_env)
        if not settings.DEBUG:
            self.run_step(self.manage("collectstatic", "--noinput", "-v", "0"), "Collecting static files", child_env)
        try:
            with redis_for_run(settings.REDIS_URL, var_dir, log=self.say) as (redis_url, _embedded):
                child_env["REDIS_URL"] = redis_url
                self.ensure_model(child_env, options["per_class"])
                demo = settings.DEBUG and not options["no_demo"]
                photos = None
                if demo:
                    self.run_step(self.manage("bootstrap_demo"), "Creating demo accounts", child_env)
                    if self.demo_listings_needed():
                        photos = self.prepare_demo_photos(child_env)
                self.serve(host, port, child_env, photos, options["web_workers"])
        except KeyboardInterrupt:
            self.say("interrupted; everything started has been stopped")

    def process_specs(self, host: str, port: int, env: dict[str, str], web_workers: int) -> list[ProcessSpec]:
        celery = [sys.executable, "-m", "celery", "-A", "moderation"]
        if settings.DEBUG:
            web = self.manage("runserver", f"{host}:{port}", "--noreload")
        else:
            web = [
                sys.executable,
                "-m",
                "gunicorn",
                "moderation.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(web_workers),
                "--access-logfile",
                "-",
            ]
        return [
            ProcessSpec(
                "worker", [*celery, "worker", "-Q", "scoring,default", "-c", "2", "-n", "scoring@%h", "-l", "INFO"], env
            ),
            ProcessSpec(
                "training", [*celery, "worker", "-Q", "training", "-c", "1", "-n", "training@%h", "-l", "INFO"], env
            ),
            ProcessSpec(
                "beat", [*celery, "beat", "-l", "INFO", "-S", "django_celery_beat.schedulers:DatabaseScheduler"], env
            ),
            ProcessSpec("web", web, env),
        ]

    def serve(self, host: str, port: int, env: dict[str, str], photos: Path | None, web_workers: int) -> None:
        supervisor = Supervisor(output=sys.stdout)
        ended = None
        supervisor.install_signal_handlers()
        base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        try:
            for spec in self.process_specs(host, port, env, web_workers):
                spec.cwd = Path(settings.BASE_DIR)
                supervisor.start(spec)
            token = self.demo_credentials().get("api_token")
            if photos is not None and token:
                threading.Thread(
                    target=self.load_demo_listings, args=(supervisor, base_url, token, photos), daemon=True
                ).start()
            self.print_banner(base_url)
            ended = supervisor.wait()
            if ended:
                supervisor.log(ended[0], f"exited with code {ended[1]}; stopping the desk")
        finally:
            supervisor.stop_all()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        if ended:
            raise CommandError(f"{ended[0]} exited with code {ended[1]}; see its output above.")

    def print_banner(self, base_url: str) -> None:
        lines = [f"Vigia is starting at {base_url}/  (API docs: {base_url}/api/docs)"]
        credentials = self.demo_credentials() if settings.DEBUG else {}
        for role in ("admin", "moderator"):
            account = credentials.get(role)
            if account:
                lines.append(f"  {role:<9} {account['username']} / {account['password']}")
        if credentials.get("api_token"):
            lines.append(f"  API token {credentials['api_token']}")
        lines.append("Press Ctrl-C to stop everything.")
        for line in lines:
            self.say(line)
