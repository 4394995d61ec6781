"""The system a benchmark drives: fresh state, production settings, Django, and the real services.

A benchmark starts from nothing (its own PostgreSQL database, dropped and created again, and its own Redis
database), runs with the production settings (DEBUG off) pointed at a throwaway work directory, and starts
gunicorn and Celery workers under the devstack supervisor, each logging to a file, so that they stop together
(pool children included) however the benchmark ends.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.harness.report import log
from moderation.devstack.processes import LoggedProcess, ProcessSpec, wait_until
from moderation.devstack.redis import free_tcp_port
from moderation.devstack.supervisor import Supervisor

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def fresh_database(url: str) -> None:
    """Drop and create the database `url` names, so that the run starts from nothing."""
    import dj_database_url
    import psycopg
    from psycopg import sql

    config = dj_database_url.parse(url)
    name = sql.Identifier(config["NAME"])
    admin = psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"],
        password=config["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))


def bench_environment(work: Path, database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """Production settings (DEBUG off) pointed at throwaway state under `work`; exported to this process too.

    Returns the whole environment, for the services this benchmark starts. `extra` adds or overrides variables.
    """
    env = {
        "DJANGO_SETTINGS_MODULE": "moderation.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + hashlib.sha256(str(work).encode()).hexdigest(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": database_url,
        "VIGIA_VAR_DIR": str(work),
        "MEDIA_ROOT": str(work / "media"),
        "VIGIA_MODEL_REGISTRY": str(work / "models"),
        "VIGIA_FEATURE_CACHE": str(work / "feature-cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO),
        **({"REDIS_URL": redis_url} if redis_url else {}),
        **extra,
    }
    os.environ.update(env)
    return {**os.environ}


def setup_django() -> None:
    """Set Django up with the environment's settings and migrate the (fresh) database."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


#: `VIGIA_API_RATE` for a benchmark whose one client posts the whole stream: the default (1200 a minute per client)
#: is a marketplace's share, and on a fast machine a throttled upload would end the run. The load benchmark, whose
#: clients are many, keeps the default.
ONE_CLIENT_API_RATE = "100000/min"


def start_from_nothing(
    work: Path, database_url: str, redis_url: str | None = None, *, flush_broker: bool = True, **extra: str
) -> dict[str, str]:
    """A fresh database (and broker database), Django set up and migrated; returns the services' environment.

    With `flush_broker` off the broker is only checked, never emptied: it may be a Redis that holds other data.
    """
    env = bench_environment(work, database_url, redis_url, **extra)
    log(f"work dir {work}; database {database_url}" + (f"; redis {redis_url}" if redis_url else ""))
    fresh_database(database_url)
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        if flush_broker:
            client.flushdb()
        else:
            client.ping()
    setup_django()
    return env


def api_token(username: str, client: str = "bench") -> str:
    """An API key of `client` (created if new) for a new marketplace account `username`."""
    from moderation.services.clients import api_user, get_or_create_client, issue_key

    owner, _ = get_or_create_client(name=client)
    return issue_key(client=owner, user=api_user(username), name=username)[1]


def marketplace_token() -> str:
    """Turn off the audit sample (every photo's route is then its score alone) and return an API token."""
    from moderation.selectors.settings import get_settings

    row = get_settings()
    row.audit_rate = 0.0
    row.save()
    return api_token("bench-marketplace")


def gunicorn(port: int, workers: int, *options: str) -> list[str]:
    """The production web server on loopback `port`."""
    return [str(BIN / "gunicorn"), "moderation.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers), *options]


def celery_worker(queues: str, concurrency: int, node: str, loglevel: str, pool: str = "prefork") -> list[str]:
    """A Celery worker on `queues` (prefork unless `pool` says otherwise), without the cluster chatter a
    single-machine run does not need."""
    return [
        str(BIN / "celery"),
        "-A",
        "moderation",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "--pool",
        pool,
        "-n",
        node,
        "-l",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


class Services:
    """The benchmark's web server and workers, each logging to `logs/NAME.log`, stopped together by `stop()`."""

    def __init__(self, env: dict[str, str], logs: Path, grace: float = 20.0):
        self.env = env
        self.logs = Path(logs)
        self.port = free_tcp_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.supervisor = Supervisor(output=sys.stdout, grace=grace)

    def start(self, name: str, argv: list[str]) -> LoggedProcess:
        """Start one service from the repository root with the benchmark's environment."""
        return self.supervisor.start_logged(ProcessSpec(name, argv, self.env, REPO), self.logs / f"{name}.log")

    def __getitem__(self, name: str) -> LoggedProcess:
        """The service started as `name`."""
        return self.supervisor.logged[name]

    def start_web(self, workers: int, *options: str) -> LoggedProcess:
        """Start gunicorn on this stack's port."""
        return self.start("web", gunicorn(self.port, workers, *options))

    def wait_until(self, condition: Callable[[], T], timeout: float, what: str, interval: float = 0.3) -> T:
        """Like devstack's `wait_until`, failing at once (with its log) if a service exits meanwhile."""
        return wait_until(condition, timeout, what, interval=interval, check=self.supervisor.check)

    def wait_healthy(self, timeout: float, statuses: tuple[int, ...] = (200,), interval: float = 1.0) -> None:
        """Wait until the health endpoint answers with one of `statuses`."""
        import requests

        last = ["no answer"]

        def healthy() -> bool:
            try:
                response = requests.get(f"{self.base}/api/v1/health", timeout=5)
            except requests.RequestException as error:
                last[0] = str(error)
                return False
            last[0] = f"{response.status_code} {response.text[:300]}"
            return response.status_code in statuses

        try:
            self.wait_until(healthy, timeout, "the web server's health endpoint", interval=interval)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; last answer: {last[0]}") from None

    def stop(self) -> None:
        """Stop every service: SIGTERM to each, SIGKILL to what is left of their groups after the grace period."""
        self.supervisor.stop_all()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def scoring_services(env: dict[str, str], logs: Path, children: int, web_workers: int) -> Services:
    """A prefork scoring worker (`children` single-threaded children) and gunicorn, as the product serves."""
    services = Services(env, logs)
    services.start("worker", celery_worker("scoring,default", children, "bench@%h", "warning"))
    services.start_web(web_workers, "-k", "gthread", "--threads", "4", "--timeout", "120")
    return services


def child_pids(pid: int) -> list[int]:
    """The PIDs of a process's direct children (a prefork worker's pool), sorted."""
    import psutil

    return sorted(child.pid for child in psutil.Process(pid).children())


def children_rss_mb(pid: int) -> list[float]:
    """Resident memory of each descendant of a process, in MiB ([] if it is gone)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
        return [child.memory_info().rss / 2**20 for child in children]
    except psutil.Error:
        return []


def cpu_seconds(pids: list[int] | None = None, name_prefix: str | None = None) -> float:
    """CPU time (user + system) used so far by the processes ``pids`` and their descendants, or by every process
    whose name starts with ``name_prefix`` (the machine's PostgreSQL or Redis); what has exited is not counted."""
    import psutil

    if name_prefix is not None:
        processes = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith(name_prefix)]
    else:
        processes = []
        for pid in pids or []:
            try:
                root = psutil.Process(pid)
                processes += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
