"""`manage.py check --deploy` with production settings, run as a fresh process with a clean environment.

A subprocess is the only honest way: settings are read once at start-up, and the test process runs with the test
settings. The environment holds only what an operator would set, so nothing from the developer's shell leaks in.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage(tmp_path, *args, **env):
    clean_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "moderation.settings",
        "VIGIA_VAR_DIR": str(tmp_path / "var"),
        **env,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(**overrides):
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "desk.example.com",
        **overrides,
    }


def test_deploy_check_is_clean_with_production_settings(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_deploy_check_fails_with_debug_on(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **production_env(DEBUG="1"))

    assert result.returncode != 0
    assert "security.W018" in result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = production_env()
    del env["SECRET_KEY"]

    result = manage(tmp_path, "check", **env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_a_webhook_probe_interval_under_a_second_is_refused_at_start(tmp_path):
    result = manage(tmp_path, "check", **production_env(VIGIA_WEBHOOK_PROBE_SECONDS="0"))
    assert result.returncode != 0
    assert "VIGIA_WEBHOOK_PROBE_SECONDS must be at least 1" in result.stderr
