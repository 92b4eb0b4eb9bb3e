"""The baseline for escalation creates: a bare async Django view doing one INSERT.

It goes through the same server, ASGI handler, middleware stack, connection pool and database as
``POST /api/v1/escalations``, and skips everything that is AwaitHuman's own work: key
authentication, the rate-limit round trip to Redis, DRF, validation, the audit chain, serialisation.
"""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS bench_insert ("
    "id bigserial PRIMARY KEY, payload jsonb NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now())"
)


def _insert(payload: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_insert (payload) VALUES (%s) RETURNING id", [payload])
        return cursor.fetchone()[0]


@csrf_exempt
async def bare_insert(request: HttpRequest) -> JsonResponse:
    payload = json.loads(request.body or b"{}")
    row_id = await sync_to_async(_insert)(json.dumps(payload))
    return JsonResponse({"id": row_id}, status=201)
