"""The project's settings plus one URL: ``/bench/insert``, the bare async-Django baseline.

Only ``ROOT_URLCONF`` differs; the product's URLs, middleware, database pool and Redis are exactly
those of ``awaithuman.settings``.
"""

import os

from awaithuman.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

if os.environ.get("BENCH_NO_CHANNEL_LAYER"):
    # Diagnostic only (`python -m bench diag`): what the channel layer costs each long-poll.
    CHANNEL_LAYERS = {}
