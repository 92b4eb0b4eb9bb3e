"""Each module here starts its own server and Chromium once (module-scoped fixtures): keep a
module's tests on one pytest-xdist worker (``--dist loadgroup``), so that each starts once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group(f"browser-{item.path.stem}"))
