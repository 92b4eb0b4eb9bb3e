"""AwaitHuman's benchmark suite: ``make bench`` (``python -m bench``), results in RESULTS.md.

Runs the production processes (Daphne and Uvicorn serving ``awaithuman.asgi.application``) on the
machine's real PostgreSQL and Redis, and measures every figure next to a baseline taken in the same
invocation. See RESULTS.md § Method.
"""
