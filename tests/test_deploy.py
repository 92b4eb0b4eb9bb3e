"""`manage.py check --deploy` is clean with production settings (DESIGN § Configuration).

Settings are read once per process, so each check runs in a fresh interpreter with the
production environment, the way a deployment would start.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from tests.live import ROOT

PRODUCTION = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "awaithuman.example.com",
    "AWAITHUMAN_BASE_URL": "https://awaithuman.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    # Never connected to: the deploy checks do not touch the database.
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/awaithuman_ci",
    "REDIS_URL": "redis://127.0.0.1:6379/5",
}

CHECK = (
    "import django; django.setup(); from django.core.management import call_command; "
    "call_command('check', deploy=True, fail_level='WARNING')"
)


def deploy_check(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECURE_COOKIES", "CSRF_TRUSTED_ORIGINS", "DJANGO_SETTINGS_MODULE")
    }
    env.update(PRODUCTION, SECRET_KEY=secrets.token_urlsafe(64))
    env.update(DJANGO_SETTINGS_MODULE="awaithuman.settings", **overrides)
    return subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_deploy_check_is_clean_with_production_settings():
    result = deploy_check()
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "warning"),
    [
        ({"DEBUG": "1"}, "security.W018"),
        ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
        ({"SECURE_SSL_REDIRECT": "0"}, "security.W008"),
        ({"AWAITHUMAN_BASE_URL": "http://awaithuman.example.com"}, "security.W012"),
    ],
)
def test_deploy_check_catches_an_unsafe_setting(overrides, warning):
    """The check above is not vacuous: each production setting it relies on is load-bearing."""
    result = deploy_check(**overrides)
    assert result.returncode != 0
    assert warning in result.stderr
