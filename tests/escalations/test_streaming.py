"""Large downloads stream under ASGI too: Django would buffer a synchronous iterator whole."""

from __future__ import annotations

import asyncio
import threading

from django.test import AsyncRequestFactory, RequestFactory

from escalations.streaming import asynchronous, pieces, streaming_response

LINES = [f"line {n}\n".encode() for n in range(10_000)]


def test_pieces_regroup_the_same_bytes_into_large_pieces():
    grouped = list(pieces(iter(LINES), size=4096))

    assert b"".join(grouped) == b"".join(LINES)
    assert all(len(piece) >= 4096 for piece in grouped[:-1])
    assert len(grouped) < len(LINES) / 100


def test_an_asgi_request_gets_an_asynchronous_stream_pulled_piece_by_piece():
    produced: list[int] = []

    def lines():
        for number, line in enumerate(LINES):
            produced.append(number)
            yield line

    response = streaming_response(
        AsyncRequestFactory().get("/"), lines(), content_type="text/plain", filename="x.txt"
    )
    assert response.is_async

    async def read_first_piece() -> tuple[bytes, int]:
        stream = aiter(response.streaming_content)
        first = await anext(stream)
        return first, len(produced)

    first, produced_so_far = asyncio.run(read_first_piece())
    assert LINES[0] in first
    assert produced_so_far < len(LINES)  # not read whole before the first piece went out


def test_a_wsgi_request_gets_a_synchronous_stream():
    response = streaming_response(
        RequestFactory().get("/"), iter(LINES), content_type="text/plain", filename="x.txt"
    )
    assert not response.is_async
    assert b"".join(response.streaming_content) == b"".join(LINES)
    assert response["Content-Disposition"] == 'attachment; filename="x.txt"'


def test_the_asynchronous_stream_reads_in_one_sync_thread():
    threads: set[int] = set()

    def lines():
        for line in LINES[:500]:
            threads.add(threading.get_ident())
            yield line

    async def read() -> bytes:
        return b"".join([piece async for piece in asynchronous(pieces(lines(), size=64))])

    assert asyncio.run(read()) == b"".join(LINES[:500])
    assert len(threads) == 1
