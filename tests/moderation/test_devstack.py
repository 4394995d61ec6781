"""The local stack `make run` relies on: an embedded Redis that never outlives the desk, and a supervisor that
stops every process it started. These run real processes (a Redis server, short Python children) but no model.
"""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moderation.devstack.processes import ProcessExited, ProcessSpec, pid_alive, start_logged, stop_pid
from moderation.devstack.redis import EmbeddedRedis, free_tcp_port, masked, redis_answers, redis_for_run
from moderation.devstack.supervisor import Supervisor
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def dead_port_url() -> str:
    return f"redis://127.0.0.1:{free_tcp_port()}/0"


@pytest.fixture
def embedded(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    yield server
    server.stop()


def test_embedded_redis_answers_ping_and_is_gone_after_stop(embedded):
    url = embedded.start()

    assert redis_answers(url)
    pid = embedded.pid
    assert embedded.pid_file.read_text().strip() == str(pid)

    embedded.stop()

    assert not pid_alive(pid)
    assert not redis_answers(url)
    assert not embedded.pid_file.exists()


def test_a_stale_server_from_a_crashed_run_is_stopped_before_a_new_one_starts(tmp_path):
    crashed = EmbeddedRedis(tmp_path / "redis")
    crashed.start()
    stale_pid = crashed.pid

    fresh = EmbeddedRedis(tmp_path / "redis")
    try:
        fresh.start()
        wait_until(lambda: not pid_alive(stale_pid), timeout=10, what="the stale Redis to stop", interval=0.05)
        assert redis_answers(fresh.url)
        assert fresh.pid_file.read_text().strip() == str(fresh.pid)
    finally:
        fresh.stop()
        crashed.stop()


def test_configured_redis_is_used_when_it_answers(embedded, tmp_path):
    configured = embedded.start()

    with redis_for_run(configured, tmp_path / "var", log=lambda _m: None) as (url, started):
        assert url == configured
        assert started is None
    assert not (tmp_path / "var" / "redis" / "redis.pid").exists()


def test_embedded_redis_starts_when_the_configured_one_is_down_and_stops_even_on_error(tmp_path):
    run = redis_for_run(dead_port_url(), tmp_path, log=lambda _m: None)
    with pytest.raises(RuntimeError, match="boom"), run as (url, started):
        assert started is not None
        pid = started.pid
        assert redis_answers(url)
        raise RuntimeError("boom")

    assert not pid_alive(pid)
    assert not redis_answers(url)


def test_with_redis_wrapper_hands_the_embedded_url_to_the_command_and_cleans_up(tmp_path):
    probe = tmp_path / "seen.json"
    script = (
        "import json, os, sys; dsm = os.environ.get('DJANGO_SETTINGS_MODULE');"
        "from moderation.devstack.redis import redis_answers; url = os.environ['REDIS_URL'];"
        f"json.dump({{'url': url, 'ok': redis_answers(url), 'dsm': dsm}}, open({str(probe)!r}, 'w'));"
        "sys.exit(7)"
    )
    env = {**os.environ, "REDIS_URL": dead_port_url(), "VIGIA_VAR_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)

    result = subprocess.run(
        [sys.executable, "-m", "moderation.devstack", "with-redis", "--", sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 7, result.stderr
    seen = json.loads(probe.read_text())
    assert seen["ok"] is True
    assert seen["url"] != env["REDIS_URL"]
    # Importing the package sets DJANGO_SETTINGS_MODULE; the command (pytest) must not inherit it.
    assert seen["dsm"] is None
    assert not redis_answers(seen["url"])
    assert not (tmp_path / "redis" / "redis.pid").exists()


# A stand-in for the desk's process list: each child starts a grandchild (as Celery's pool does) and records both.
CHILD = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time

    def graceful(signum, frame):
        print("graceful shutdown", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, graceful)
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[1], "a") as out:
        out.write(f"{os.getpid()} {grandchild.pid}\\n")
    print("ready", flush=True)
    time.sleep(600)
    """
)

DRIVER = textwrap.dedent(
    """
    import sys
    import django
    django.setup()
    from moderation.devstack.desk import Desk
    from moderation.devstack.processes import ProcessSpec

    pids_file, child_script = sys.argv[1], sys.argv[2]
    specs = [ProcessSpec(name, [sys.executable, "-c", child_script, pids_file]) for name in ("worker", "beat", "web")]
    Desk(sys.stdout, "127.0.0.1", 1).serve(specs)
    """
)


def start_fake_desk(tmp_path):
    pids_file = tmp_path / "pids.txt"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "moderation.test_settings", "VIGIA_VAR_DIR": str(tmp_path)}
    desk = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(pids_file), CHILD],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def all_ready():
        return pids_file.exists() and len(pids_file.read_text().splitlines()) == 3

    wait_until(all_ready, timeout=30, what="the fake desk's children to start", interval=0.05)
    pids = [int(pid) for line in pids_file.read_text().splitlines() for pid in line.split()]
    return desk, pids


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_rundesk_stops_every_child_and_grandchild_on_a_signal(tmp_path, signum):
    desk, pids = start_fake_desk(tmp_path)
    assert all(pid_alive(pid) for pid in pids)

    desk.send_signal(signum)
    output, _ = desk.communicate(timeout=30)

    assert desk.returncode == 0, output
    wait_until(
        lambda: not any(pid_alive(pid) for pid in pids),
        timeout=10,
        what=f"every process to stop: {output}",
        interval=0.05,
    )
    for name in ("worker", "beat", "web"):
        assert f"{name:<8} | ready" in output
        # The leader is asked first and may shut down its own way (Celery's warm shutdown).
        assert f"{name:<8} | graceful shutdown" in output
        assert f"{name:<8} | stopped (exit 0)" in output


def test_children_do_not_outlive_a_killed_supervisor(tmp_path):
    desk, pids = start_fake_desk(tmp_path)
    children = pids[0::2]

    desk.kill()
    desk.wait(timeout=10)

    wait_until(
        lambda: not any(pid_alive(pid) for pid in children), timeout=10, what="no orphaned children", interval=0.05
    )
    for grandchild in pids[1::2]:
        # Grandchildren are not ours to track once their parent died; clean them up so nothing leaks.
        stop_pid(grandchild, grace=1)


def test_the_embedded_redis_dies_with_a_killed_holder(tmp_path):
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from moderation.devstack.redis import EmbeddedRedis
        server = EmbeddedRedis(Path({str(tmp_path)!r}))
        server.start()
        print(server.pid, server.url, flush=True)
        time.sleep(600)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pid_text, url = holder.stdout.readline().split()
    pid = int(pid_text)
    assert redis_answers(url)

    holder.kill()
    holder.wait(timeout=10)

    wait_until(lambda: not pid_alive(pid), timeout=10, what="the embedded Redis to die with its holder", interval=0.05)


def test_a_child_that_exits_on_its_own_stops_the_desk(tmp_path):
    supervisor = Supervisor(output=io.StringIO(), grace=5)
    supervisor.start(ProcessSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"]))
    supervisor.start(ProcessSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"]))
    try:
        assert supervisor.wait() == ("crasher", 3)
    finally:
        supervisor.stop_all()
    assert supervisor.processes["sleeper"].returncode is not None


# A stand-in for a Celery worker: start-up chatter, the ready line a little later, a grandchild (its pool).
SLOW_STARTER = textwrap.dedent(
    """
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"booting, pool {grandchild.pid}", flush=True)
    time.sleep(0.5)
    print("celery@bench ready.", flush=True)
    time.sleep(600)
    """
)


def test_a_logged_process_is_waited_for_until_its_ready_line_and_stopped_with_its_group(tmp_path):
    log_path = tmp_path / "logs" / "worker.log"
    worker = start_logged(ProcessSpec("worker", [sys.executable, "-c", SLOW_STARTER]), log_path)
    try:
        assert worker.find_line(" ready.") is None

        line = worker.wait_for_line(" ready.", timeout=20)

        assert line == "celery@bench ready."
        worker.check()
        grandchild = int(log_path.read_text().split("pool ")[1].split()[0])
        assert pid_alive(worker.pid) and pid_alive(grandchild)
    finally:
        code = worker.stop(grace=5)
    assert code is not None
    assert not pid_alive(worker.pid)
    wait_until(lambda: not pid_alive(grandchild), timeout=10, what="the logged process's group to stop", interval=0.05)


def test_waiting_for_a_line_fails_at_once_with_the_log_when_the_process_exits_first(tmp_path):
    script = "import sys; print('bad settings: no DATABASE_URL', flush=True); sys.exit(3)"
    worker = start_logged(ProcessSpec("worker", [sys.executable, "-c", script]), tmp_path / "worker.log")
    started = time.monotonic()
    try:
        with pytest.raises(ProcessExited, match=r"(?s)worker exited with code 3.*bad settings: no DATABASE_URL"):
            worker.wait_for_line(" ready.", timeout=60)
    finally:
        worker.stop(grace=1)
    assert time.monotonic() - started < 30


def test_waiting_for_a_line_that_never_comes_times_out_with_the_log(tmp_path):
    script = "import time; print('still loading the model', flush=True); time.sleep(600)"
    # An earlier run's log is started afresh: its ready line must not count for this one.
    (tmp_path / "web.log").write_text("celery@bench ready.\n")
    worker = start_logged(ProcessSpec("web", [sys.executable, "-c", script]), tmp_path / "web.log")
    try:
        with pytest.raises(TimeoutError, match=r"(?s)web to write ' ready\.'.*still loading the model"):
            worker.wait_for_line(" ready.", timeout=1)
        assert worker.poll() is None
    finally:
        worker.stop(grace=1)
    assert not pid_alive(worker.pid)


def test_the_supervisor_checks_and_stops_logged_processes_with_the_others(tmp_path):
    supervisor = Supervisor(output=io.StringIO(), grace=5)
    with supervisor:
        worker = supervisor.start_logged(
            ProcessSpec("worker", [sys.executable, "-c", SLOW_STARTER]), tmp_path / "worker.log"
        )
        crasher = supervisor.start_logged(
            ProcessSpec("crasher", [sys.executable, "-c", "print('no model', flush=True); raise SystemExit(4)"]),
            tmp_path / "crasher.log",
        )
        worker.wait_for_line(" ready.", timeout=20)
        wait_until(lambda: crasher.poll() is not None, timeout=10, what="the crasher to exit", interval=0.05)
        with pytest.raises(ProcessExited, match=r"(?s)crasher exited with code 4.*no model"):
            supervisor.check()
    assert supervisor.processes["worker"].returncode is not None
    assert "output in" in supervisor.output.getvalue()
    assert "worker   | stopped" in supervisor.output.getvalue()


def test_sqlite_default_uses_immediate_transactions_and_wal_so_desk_processes_wait_for_the_lock(tmp_path):
    """The web server and worker children share one SQLite file; every process gets the same options."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DEBUG="1", VIGIA_VAR_DIR=str(tmp_path))
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='moderation.settings'; django.setup();"
        "from django.conf import settings; from django.db import connection;"
        "print(settings.DATABASES['default']['OPTIONS']['transaction_mode']);"
        "cursor = connection.cursor(); cursor.execute('PRAGMA journal_mode'); print(cursor.fetchone()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["IMMEDIATE", "wal"]


def test_the_embedded_redis_has_a_generated_password_kept_off_its_command_line(tmp_path):
    import stat

    import redis

    with EmbeddedRedis(tmp_path / "redis") as server:
        assert server.password and f":{server.password}@" not in masked(server.url)
        assert redis_answers(server.url)
        anonymous = redis.Redis(host=server.host, port=server.port, socket_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        assert server.password not in cmdline
        assert stat.S_IMODE(server.config_file.stat().st_mode) == 0o600
