"""``awaithuman``: the server as one command, from a checkout or from an installed wheel.

    awaithuman dev [--host H] [--port P]   what ``make run`` does: migrate, seed the demo, serve
    awaithuman serve [--host H] [--port P] [--workers N]   the production web process (Uvicorn)
    awaithuman worker                      a Celery worker
    awaithuman beat                        Celery beat (one per deployment)
    awaithuman migrate                     apply database migrations
    awaithuman check [--deploy]            Django's system checks
    awaithuman manage COMMAND [ARGS]       any manage.py command (collectstatic, createorg, …)

Every subcommand reads the same environment as ``manage.py`` (README "Environment variables").
Settings are read once per process, so anything a subcommand derives from its options (the
base URL of ``dev``) goes into the environment before Django starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

# The worker's options: AwaitHuman uses none of gossip, mingle and heartbeats, and each is one
# more broadcast channel to reopen after a Redis outage (README "Run modes").
WORKER_ARGS = ["--without-gossip", "--without-mingle", "--without-heartbeat"]


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
    import django

    django.setup()


def _manage(*args: str) -> None:
    from django.core.management import call_command

    call_command(*args)


def dev(options: argparse.Namespace) -> None:
    os.environ.setdefault("AWAITHUMAN_BASE_URL", f"http://{options.host}:{options.port}")
    _django()
    _manage("migrate", "--noinput", "--verbosity", "0")
    _manage("seed_demo")
    from daphne.cli import CommandLineInterface

    # Twisted listens with a backlog of 50 unless told otherwise (see the Makefile's run).
    endpoint = f"tcp:port={options.port}:interface={options.host}:backlog=1024"
    CommandLineInterface().run(["-e", endpoint, "awaithuman.asgi:application"])


def serve(options: argparse.Namespace) -> None:
    _django()
    import uvicorn

    # log_config=None: Uvicorn leaves logging to Django's LOGGING, so its lines follow
    # LOG_FORMAT like every other line. Requests are measured by /metrics, not access-logged.
    uvicorn.run(
        "awaithuman.asgi:application",
        host=options.host,
        port=options.port,
        workers=options.workers,
        log_config=None,
        access_log=False,
        backlog=1024,
    )


def worker(options: argparse.Namespace) -> None:
    _django()
    from awaithuman.celery import app

    app.worker_main(["worker", "--loglevel", options.loglevel, *WORKER_ARGS])


def beat(options: argparse.Namespace) -> None:
    _django()
    from awaithuman.celery import app

    argv = ["beat", "--loglevel", options.loglevel]
    if options.schedule:
        argv += ["--schedule", options.schedule]
    app.start(argv)


def migrate(options: argparse.Namespace) -> None:
    _django()
    _manage("migrate", "--noinput")


def check(options: argparse.Namespace) -> None:
    _django()
    _manage("check", *(["--deploy"] if options.deploy else []))


def manage(options: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["awaithuman manage", *options.arguments])


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="awaithuman", description=__doc__.split("\n")[0])
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def listen(sub: argparse.ArgumentParser, host: str) -> None:
        sub.add_argument("--host", default=host, help=f"interface to listen on (default {host})")
        sub.add_argument("--port", type=int, default=8000, help="port (default 8000)")

    sub = commands.add_parser("dev", help="migrate, seed the demo and serve, like make run")
    listen(sub, "127.0.0.1")
    sub.set_defaults(run=dev)

    sub = commands.add_parser("serve", help="the production web process (Uvicorn)")
    listen(sub, "0.0.0.0")  # noqa: S104 - a server behind a load balancer listens on all
    sub.add_argument("--workers", type=int, default=1, help="Uvicorn worker processes")
    sub.set_defaults(run=serve)

    for name, run, what in (("worker", worker, "a Celery worker"), ("beat", beat, "Celery beat")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("--loglevel", default="INFO")
        if name == "beat":
            sub.add_argument("--schedule", help="beat's schedule file (default in the cwd)")
        sub.set_defaults(run=run)

    sub = commands.add_parser("migrate", help="apply database migrations")
    sub.set_defaults(run=migrate)

    sub = commands.add_parser("check", help="Django's system checks")
    sub.add_argument("--deploy", action="store_true", help="include the deployment checks")
    sub.set_defaults(run=check)

    sub = commands.add_parser("manage", help="any manage.py command, for installs without one")
    sub.add_argument("arguments", nargs=argparse.REMAINDER, help="the command and its options")
    sub.set_defaults(run=manage)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    options = parser().parse_args(argv)
    options.run(options)
