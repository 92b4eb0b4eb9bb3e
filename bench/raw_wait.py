"""Baseline for held waiters: the wait loop as a bare ASGI app (no Django, no database).

Every request parks on an asyncio future until ``?timeout=`` seconds pass; ``/healthz`` answers
at once. Served by the same server software as the product, in its own process.
"""

import asyncio
import contextlib
from urllib.parse import parse_qs


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    timeout = 0.0
    if scope["path"] != "/healthz":
        query = parse_qs(scope["query_string"].decode())
        timeout = float(query.get("timeout", ["60"])[0])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.get_running_loop().create_future(), timeout)
    body = b'{"status":"pending"}' if timeout else b'{"status":"ok"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
