from __future__ import annotations

from collections.abc import Iterator

import pytest

from awaithuman.celery import app as celery_app


@pytest.fixture(autouse=True)
def _eager_tasks() -> Iterator[None]:
    """In-process tests send messages inline, on PostgreSQL+Redis too."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager
