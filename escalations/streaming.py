"""Streaming large downloads (exports, evidence bundles) without buffering them.

Under ASGI (daphne, our production server) Django serves a ``StreamingHttpResponse`` built on a
*synchronous* iterator by first reading the whole iterator into a list: a 100,000-escalation
bundle would sit in memory. So for an ASGI request the content is an asynchronous iterator that
pulls the (database-reading, synchronous) generator a piece at a time in the request's sync
thread. Under WSGI and Django's test client, a plain synchronous iterator is what streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

PIECE_BYTES = 64 * 1024


def pieces(chunks: Iterable[bytes], size: int = PIECE_BYTES) -> Iterator[bytes]:
    """The same bytes regrouped into pieces of at least ``size`` (the last may be shorter), so
    that neither the network nor a thread hop is paid per line."""
    buffer: list[bytes] = []
    held = 0
    for chunk in chunks:
        buffer.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


async def asynchronous(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Iterate ``chunks`` one piece at a time in the sync thread (where the database connection
    the generator reads from lives), yielding each to the event loop as it comes."""
    take = sync_to_async(lambda: next(chunks, None), thread_sensitive=True)
    while (piece := await take()) is not None:
        yield piece


def streaming_response(
    request: HttpRequest, chunks: Iterable[bytes], *, content_type: str, filename: str
) -> StreamingHttpResponse:
    grouped = pieces(chunks)
    content = asynchronous(grouped) if isinstance(request, ASGIRequest) else grouped
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
