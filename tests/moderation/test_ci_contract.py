"""The set-up contract the README promises: make targets and the CI entry point do what they say.

`make -n` prints the commands a target would run without running them, so these stay fast while still failing
when a target is renamed, loses its step, or stops passing the documented variables through.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def dry_run(*args: str) -> str:
    result = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_starts_the_desk_in_debug_on_port_8000_by_default():
    commands = dry_run("run")
    assert "DEBUG=1 PORT=8000 .venv/bin/python manage.py rundesk" in commands


def test_make_run_passes_port_and_debug_through():
    commands = dry_run("run", "PORT=9001", "DEBUG=0")
    assert "DEBUG=0 PORT=9001 .venv/bin/python manage.py rundesk" in commands


def test_make_test_runs_pytest_with_a_redis_and_a_timeout_and_never_exits_5():
    commands = dry_run("test")
    assert "moderation.devstack with-redis -- .venv/bin/python -m pytest" in commands
    assert "--timeout=" in commands
    assert "-eq 5" in commands


def test_make_lint_runs_ruff_check_and_format_check():
    commands = dry_run("lint")
    assert "ruff check ." in commands
    assert "ruff format --check ." in commands


@pytest.mark.parametrize(
    ("target", "script"),
    [
        ("bench", "bench/pipeline.py"),
        ("bench-classifier", "bench/classifier.py"),
        ("bench-loop", "bench/loop.py"),
        ("bench-faults", "bench/faults.py"),
        ("bench-load", "bench/load.py"),
    ],
)
def test_bench_targets_run_their_scripts(target, script):
    assert script in dry_run(target)


def test_bench_loop_streams_the_realistic_default_and_takes_a_class_pair():
    # By default the realistic stream (bench/loop.py's own defaults); a class pair only when one is asked for.
    assert "--classes" not in dry_run("bench-loop")
    assert "--classes Sandal,Sneaker" in dry_run("bench-loop", "CLASSES=Sandal,Sneaker")


def test_ci_script_is_strict_and_runs_the_suite_on_postgresql():
    script = (ROOT / ".ci" / "run").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
    assert "set -euo pipefail" in script
    assert "exec </dev/null" in script
    assert "DATABASE_URL=" in script and "postgres://" in script
    assert script.rstrip().splitlines()[-2:] == ["make lint", "make test"]
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111


def test_every_environment_variable_of_the_settings_is_documented_in_the_readme():
    import re

    source = (ROOT / "moderation" / "settings.py").read_text()
    names = set(re.findall(r"""(?:os\.environ\.get|env_bool|env_int|env_list)\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))
    readme = (ROOT / "README.md").read_text()

    assert {"DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= names
    assert [name for name in sorted(names) if f"`{name}`" not in readme] == []


def test_every_make_target_and_management_command_is_documented_in_the_readme():
    import re

    readme = (ROOT / "README.md").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1).split()
    commands = [p.stem for p in (ROOT / "moderation" / "management" / "commands").glob("*.py") if p.stem != "__init__"]

    assert "run" in phony and "rundesk" in commands
    assert [target for target in phony if f"`make {target}" not in readme] == []
    assert [command for command in commands if f"`{command}" not in readme] == []
