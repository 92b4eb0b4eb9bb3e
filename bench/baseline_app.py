"""The ASGI module the bench serves: ``awaithuman.asgi.application`` itself, on bench settings.

The application object, its routing (the wait consumer ahead of Django) and every product URL are
the production ones; the bench settings only add ``/bench/insert`` (see ``bench.urls``), so the
product and its baseline are served by the same process, server and database pool.
"""

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

from awaithuman.asgi import application

__all__ = ["application"]
