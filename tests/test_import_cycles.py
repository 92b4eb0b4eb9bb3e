"""No import cycle between the files of one app (each app package, and the SDK's package).

The graph is read from the source with ``ast`` (``tests/test_import_graph.py``'s helpers): an
edge is any import of another module of the same package, ``import a.b``, ``from .b import c``
or ``from . import b``. The rule:

* Imports inside functions count, like those at the top of the module. A late import does not
  remove a cycle, it moves it to run time (and to whichever caller happens to run first); so it
  is not a way to break one. Both cycles this test first found were such late imports.
* ``if TYPE_CHECKING:`` imports do not count: they never run.

How a cycle is broken instead, by moving the dependency to where it belongs:

* a service that queues a Celery task queues it by name (``app.tasks[NAME]``, the name a
  constant beside the caller); the task module imports the service, never the reverse, and the
  app's ``AppConfig.ready`` imports its tasks module so that the name is registered;
* a module that must announce something to modules that depend on it calls a registry they
  register with in ``AppConfig.ready`` (``escalations.hooks``, ``tenants.hooks``);
* state two modules share lives in the lower one (the in-process scheduler's wake-up is
  ``escalations.timers``'s, which the outbox calls).
"""

from __future__ import annotations

import pytest

from tests.test_import_graph import ROOT, _cycle, _graph

PACKAGES = {
    "audit": ROOT,
    "tenants": ROOT,
    "escalations": ROOT,
    "notifications": ROOT,
    "webhooks": ROOT,
    "suggestions": ROOT,
    "awaithuman": ROOT,
    "awaithuman_sdk": ROOT / "sdk" / "src",
}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_of_the_package_imports_back_a_module_that_imports_it(package):
    cycle = _cycle(_graph(package, PACKAGES[package]))

    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking_ones(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
    )
    (package / "c.py").write_text("from .a import f\nimport pkg.b\n")

    assert _graph("pkg", tmp_path) == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": set(),
        "pkg.c": {"pkg.a", "pkg.b"},
    }
