"""The whole desk on one machine, as `make run` (`manage.py rundesk`) starts it: set-up steps, then its processes.

Set-up steps run in the foreground (their output and the training progress bar go straight to the terminal, and
Ctrl-C interrupts them); then the long-running processes start under a supervisor that prefixes their output and
stops all of them, the embedded Redis included, on Ctrl-C or SIGTERM. Every step is idempotent and cheap when
already done, so a second start does not retrain or reload anything. This module needs Django's settings.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.core.management import get_commands

from classifier.registry import Registry
from moderation.devstack.demo import DEMO_ALLOWED, DEMO_PROHIBITED, demo_listings_needed, load_demo_listings
from moderation.devstack.processes import DevstackError, ProcessSpec
from moderation.devstack.redis import redis_for_run
from moderation.devstack.supervisor import Supervisor


def active_model(registry: Registry) -> str | None:
    """The registry's active version if its directory exists (a pointer to a removed version means: train)."""
    version = registry.active_version()
    return version if version and (registry.root / version).is_dir() else None


def has_images(directory: Path) -> bool:
    """Whether `directory` holds at least one photo, at any depth."""
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    return Path(directory).is_dir() and any(p.suffix.lower() in suffixes for p in Path(directory).rglob("*"))


def port_is_free(host: str, port: int) -> bool:
    """Whether this process could listen on `host`:`port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def export_mixture(out: Path, split: str, per_class: int) -> list[str]:
    """The classifier command that exports the demo's prohibited class and its allowed mixture into `out`.

    `per_class` photos of the prohibited class; the allowed side gets a third as many of each other Fashion-MNIST
    class, the real photos of other subjects on this split's side, and synthetic blanks and noise
    (`classifier.mixture`), all under one allowed label.
    """
    return [
        sys.executable,
        "-m",
        "classifier",
        "export-mixture",
        "--out",
        str(out),
        "--prohibited",
        DEMO_PROHIBITED,
        "--allowed-label",
        DEMO_ALLOWED,
        "--split",
        split,
        "--per-class",
        str(per_class),
    ]


def first_model_report() -> Path:
    """Where the first model's training report (the `train` command's JSON) is kept."""
    return Path(settings.VAR_DIR) / "first-model.json"


def training_summary(report: Path) -> str:
    """One line on a trained model from its `train` report: test figures and what cross-validation chose."""
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return f"The first model is trained; its report {report} could not be read."
    metrics = data.get("metrics") or {}
    figures = ", ".join(
        f"{key} {metrics[key]:.3f}"
        for key in ("accuracy", "precision", "recall")
        if isinstance(metrics.get(key), int | float)
    )
    chosen = (data.get("chosen_by_cv") or {}).get("chosen") or {}
    choice = ", ".join(f"{key} {value}" for key, value in chosen.items())
    parts = [f"Model {data.get('version', '?')} trained in {data.get('seconds', 0):.0f} s"]
    if figures:
        parts.append(f"on its {metrics.get('n', '?')} test photos: {figures}")
    if choice:
        parts.append(f"chosen by cross-validation: {choice}")
    return "; ".join(parts) + f" (full report: {report})"


def manage(*args: str) -> list[str]:
    """A `manage.py` command line run with this interpreter."""
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]


#: The demo's webhook receiver listens this far above the web port (9000 for the default 8000).
LISTEN_PORT_OFFSET = 1000


def listen_spec(port: int, secrets_file: Path, env: dict[str, str]) -> ProcessSpec:
    """`webhook_listen` for the demo client's endpoint: verifies and prints every event the desk sends."""
    return ProcessSpec("listen", manage("webhook_listen", "--port", str(port), "--secret-file", str(secrets_file)), env)


def process_specs(
    host: str, port: int, env: dict[str, str], web_workers: int, listen: ProcessSpec | None = None
) -> list[ProcessSpec]:
    """The desk's long-running processes: scoring, training and webhooks workers, beat, the web server, and the
    demo's webhook receiver when there is one."""
    celery = [sys.executable, "-m", "celery", "-A", "moderation"]
    # Sending webhooks waits on the network, not the CPU: a few threads, and no TensorFlow in this worker.
    webhooks = [*celery, "worker", "-Q", "webhooks", "--pool", "threads", "-c", "4", "-n", "webhooks@%h", "-l", "INFO"]
    if settings.DEBUG:
        web = manage("runserver", f"{host}:{port}", "--noreload")
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
        ProcessSpec("webhooks", webhooks, {**env, "VIGIA_PRELOAD_TENSORFLOW": "0"}),
        ProcessSpec(
            "beat", [*celery, "beat", "-l", "INFO", "-S", "django_celery_beat.schedulers:DatabaseScheduler"], env
        ),
        ProcessSpec("web", web, env),
        *([listen] if listen else []),
    ]


class Desk:
    """One start of the desk: `run()` does the set-up steps and then serves until Ctrl-C, SIGTERM or a crash.

    Failures raise DevstackError with a message for the terminal; `manage.py rundesk` turns it into its error.
    """

    def __init__(
        self, stdout: TextIO, host: str, port: int, web_workers: int = 2, per_class: int = 300, demo: bool = True
    ):
        self.stdout = stdout
        self.host = host
        self.port = port
        self.web_workers = web_workers
        self.per_class = per_class
        self.demo = demo

    @property
    def base_url(self) -> str:
        """Where a browser on this machine reaches the web server."""
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"

    def say(self, message: str) -> None:
        """One line of the desk's own, prefixed like the supervised processes' lines."""
        self.stdout.write(f"{'desk':<8} | {message}\n")
        self.stdout.flush()

    # Set-up -----------------------------------------------------------------------------------------------

    def run_step(
        self, argv: list[str], what: str, env: dict[str, str] | None = None, output: Path | None = None
    ) -> None:
        """Run one set-up step in the foreground; a failure stops the start with the step's name.

        With `output` the step's standard output (a command's JSON report) goes to that file instead of the
        terminal, where a full report would bury the lines a new user needs; its errors still show.
        """
        self.say(what)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
        # stdout=None inherits the terminal.
        with output.open("w") if output is not None else nullcontext() as report:
            result = subprocess.run(
                argv, cwd=settings.BASE_DIR, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, stdout=report
            )
        if result.returncode != 0:
            raise DevstackError(f"{what} failed (exit {result.returncode}); see the output above.")

    def require_command(self, name: str) -> bool:
        """Whether `manage.py name` exists in this checkout; warns and skips the step when it does not."""
        if name in get_commands():
            return True
        self.say(f"warning: `manage.py {name}` is not available in this checkout; skipping that step")
        return False

    def ensure_model(self, env: dict[str, str]) -> None:
        """Make sure a model is active: on first start export Fashion-MNIST and train one (with a progress bar)."""
        registry = Registry(settings.VIGIA_MODEL_REGISTRY)
        data = Path(settings.VIGIA_TRAINING_DATA)
        active = active_model(registry)
        trained_now = False
        if active:
            self.say(f"Active model {active} in {registry.root}")
        else:
            if not has_images(data):
                self.run_step(
                    export_mixture(data, "train", self.per_class),
                    f"Exporting {self.per_class} {DEMO_PROHIBITED} photos and everything else into {data}",
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
                    str(registry.root),
                    "--prohibited",
                    DEMO_PROHIBITED,
                    "--allowed-label",
                    DEMO_ALLOWED,
                    "--backbone",
                    settings.VIGIA_BACKBONE,
                    "--activate",
                ],
                f"Training the first model ({settings.VIGIA_BACKBONE}, {DEMO_PROHIBITED} prohibited)",
                env,
                output=first_model_report(),
            )
            active = active_model(registry)
            if not active:
                raise DevstackError(f"Training finished but no model is active in {registry.root}.")
            self.say(training_summary(first_model_report()))
            trained_now = True
        if self.require_command("sync_models"):
            self.run_step(manage("sync_models"), "Mirroring the model registry into the database", env)
        wants_import = trained_now or not self.initial_set_imported()
        if wants_import and has_images(data) and self.require_command("import_training_set"):
            self.run_step(
                manage("import_training_set", str(data), "--prohibited", DEMO_PROHIBITED),
                f"Importing the training set {data}",
                env,
            )

    def initial_set_imported(self) -> bool:
        """Whether the initial training set is in the database already."""
        from moderation.models import ExampleSource, TrainingExample

        return TrainingExample.objects.filter(source=ExampleSource.INITIAL).exists()

    def demo_credentials(self) -> dict:
        """The demo accounts and API token `bootstrap_demo` wrote, or {} before it ran."""
        path = Path(settings.VAR_DIR) / "demo-credentials.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def bootstrap_demo(self, env: dict[str, str]) -> ProcessSpec | None:
        """Demo accounts, and a webhook endpoint of the demo client at a local receiver; returns the receiver."""
        listen_port = self.port + LISTEN_PORT_OFFSET
        if not port_is_free("127.0.0.1", listen_port):
            self.say(f"warning: port {listen_port} is in use; starting without the demo webhook receiver")
            self.run_step(manage("bootstrap_demo"), "Creating demo accounts", env)
            return None
        secrets_file = Path(settings.VAR_DIR) / "demo-webhook-secrets"
        url = f"http://127.0.0.1:{listen_port}/"
        self.run_step(
            manage("bootstrap_demo", "--webhook-url", url, "--webhook-secrets-file", str(secrets_file)),
            "Creating demo accounts and the demo webhook endpoint",
            env,
        )
        return listen_spec(listen_port, secrets_file, env)

    def prepare_demo_photos(self, env: dict[str, str]) -> Path:
        """Test photos for the demo listings (the prohibited class and everything else), exported on first use."""
        photos = Path(settings.VAR_DIR) / "demo-photos"
        if not has_images(photos):
            self.run_step(
                export_mixture(photos, "test", 6),
                "Exporting test photos for the demo listings",
                env,
            )
        return photos

    # Main -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Set up (migrate, Redis, model, demo accounts) and serve until stopped; nothing is left running after."""
        if not port_is_free(self.host, self.port):
            raise DevstackError(
                f"Port {self.port} on {self.host} is in use; stop what uses it or set PORT=... (make run PORT=8001)."
            )
        # Until the supervisor takes over, SIGTERM behaves like Ctrl-C so set-up steps unwind and clean up.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        var_dir = Path(settings.VAR_DIR)
        var_dir.mkdir(parents=True, exist_ok=True)
        child_env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}

        self.run_step(manage("migrate", "--noinput", "-v", "0"), "Migrating the database", child_env)
        if not settings.DEBUG:
            self.run_step(manage("collectstatic", "--noinput", "-v", "0"), "Collecting static files", child_env)
        try:
            with redis_for_run(settings.REDIS_URL, var_dir, log=self.say) as (redis_url, _embedded):
                child_env["REDIS_URL"] = redis_url
                self.ensure_model(child_env)
                photos = listen = None
                if self.demo:
                    listen = self.bootstrap_demo(child_env)
                    if demo_listings_needed():
                        photos = self.prepare_demo_photos(child_env)
                self.serve(process_specs(self.host, self.port, child_env, self.web_workers, listen), photos)
        except KeyboardInterrupt:
            self.say("interrupted; everything started has been stopped")

    def serve(self, specs: list[ProcessSpec], photos: Path | None = None) -> None:
        """Run `specs` under a supervisor (and post the demo listings from `photos`) until stopped or a crash."""
        supervisor = Supervisor(output=sys.stdout)
        ended = None
        supervisor.install_signal_handlers()
        try:
            for spec in specs:
                spec.cwd = Path(settings.BASE_DIR)
                supervisor.start(spec)
            token = self.demo_credentials().get("api_token")
            if photos is not None and token:
                threading.Thread(
                    target=load_demo_listings, args=(supervisor, self.base_url, token, photos), daemon=True
                ).start()
            self.print_banner()
            ended = supervisor.wait()
            if ended:
                supervisor.log(ended[0], f"exited with code {ended[1]}; stopping the desk")
        finally:
            supervisor.stop_all()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        if ended:
            raise DevstackError(f"{ended[0]} exited with code {ended[1]}; see its output above.")

    def print_banner(self) -> None:
        """Where the desk is, the demo accounts (DEBUG only) and how to stop it."""
        base_url = self.base_url
        lines = [f"Vigia is starting at {base_url}/  (API docs: {base_url}/api/docs)"]
        credentials = self.demo_credentials() if settings.DEBUG else {}
        for role in ("admin", "moderator"):
            account = credentials.get(role)
            if account:
                lines.append(f"  {role:<9} {account['username']} / {account['password']}")
        if credentials.get("api_token"):
            lines.append(f"  API token {credentials['api_token']}")
        if credentials.get("webhook_url"):
            lines.append(
                f"  webhooks  {credentials['client']} -> {credentials['webhook_url']} (printed under `listen`)"
            )
        lines.append("Press Ctrl-C to stop everything.")
        for line in lines:
            self.say(line)
