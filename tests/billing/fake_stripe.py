"""A fake Stripe API on 127.0.0.1, for the calls AwaitHuman makes.

It checks what Stripe would: the ``Authorization: Bearer sk_test_…`` header, the form-encoded
parameters of each call (answering 400 with Stripe's error shape when one is missing or wrong)
and, for meter events, the ``Idempotency-Key`` header (a repeated key returns the first answer;
a repeated ``identifier`` is dropped, as Stripe does). Tests set ``subscriptions`` to what Stripe
"has" and read ``calls`` and ``meter_events`` afterwards.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


class StripeError(Exception):
    def __init__(self, status: int, message: str, param: str = "") -> None:
        super().__init__(message)
        self.status, self.param = status, param


@dataclass
class FakeStripe:
    secret_key: str = "sk_test_fake_4242"
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    meter_events: list[dict[str, str]] = field(default_factory=list)
    # Answer this many meter-event requests with a 500 after recording them (a lost answer).
    meter_event_failures: int = 0
    url: str = ""
    _idempotent: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- test helpers -----------------------------------------------------------------------

    def subscription(
        self,
        id: str,
        *,
        customer: str,
        price: str,
        status: str = "active",
        organization: str = "",
        cancel_at_period_end: bool = False,
    ) -> dict[str, Any]:
        now = int(time.time())
        subscription = {
            "id": id,
            "object": "subscription",
            "customer": customer,
            "status": status,
            "created": now,
            "cancel_at_period_end": cancel_at_period_end,
            "metadata": {"organization": organization} if organization else {},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{secrets.token_hex(6)}",
                        "object": "subscription_item",
                        "price": {"id": price, "object": "price"},
                        "current_period_start": now,
                        "current_period_end": now + 30 * 86400,
                    }
                ],
            },
        }
        self.subscriptions[id] = subscription
        return subscription

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    def billed_units(self) -> int:
        """What Stripe would bill: the sum of distinct meter events."""
        return sum(int(event["payload[value]"]) for event in self.meter_events)

    # --- the API ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str], headers: dict[str, str]):
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.secret_key}" or not auth.startswith("Bearer sk_test_"):
            raise StripeError(401, "Invalid API Key provided.")
        with self._lock:
            self.calls.append(Call(method, path, params, headers))
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._checkout_session(params)
        if method == "POST" and path == "/v1/billing_portal/sessions":
            _require(params, "customer", "return_url")
            return {
                "id": f"bps_{secrets.token_hex(8)}",
                "object": "billing_portal.session",
                "customer": params["customer"],
                "url": f"https://billing.stripe.test/p/session/{secrets.token_hex(8)}",
            }
        if method == "GET" and path.startswith("/v1/subscriptions/"):
            subscription = self.subscriptions.get(path.rsplit("/", 1)[1])
            if subscription is None:
                raise StripeError(404, "No such subscription.", "id")
            return subscription
        if method == "POST" and path == "/v1/billing/meter_events":
            return self._meter_event(params, headers)
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    def _checkout_session(self, params: dict[str, str]) -> dict[str, Any]:
        _require(params, "mode", "success_url", "cancel_url", "line_items[0][price]")
        if params["mode"] != "subscription":
            raise StripeError(400, "mode must be subscription here", "mode")
        if params.get("line_items[0][quantity]") != "1":
            raise StripeError(400, "A licensed price needs quantity 1.", "line_items[0][quantity]")
        if "customer" in params and "customer_email" in params:
            raise StripeError(400, "Pass customer or customer_email, not both.", "customer")
        session_id = f"cs_test_{secrets.token_hex(8)}"
        return {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "client_reference_id": params.get("client_reference_id"),
            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
        }

    def _meter_event(self, params: dict[str, str], headers: dict[str, str]) -> Any:
        _require(
            params,
            "event_name",
            "payload[stripe_customer_id]",
            "payload[value]",
            "identifier",
            "timestamp",
        )
        key = headers.get("idempotency-key", "")
        if not key:
            raise StripeError(400, "Meter events from AwaitHuman must carry an Idempotency-Key.")
        if abs(int(params["timestamp"]) - time.time()) > 35 * 86400:
            raise StripeError(400, "timestamp too far from now", "timestamp")
        with self._lock:
            if key in self._idempotent:
                return self._idempotent[key]
            if all(event["identifier"] != params["identifier"] for event in self.meter_events):
                self.meter_events.append(params)
            answer = (
                200,
                {
                    "object": "billing.meter_event",
                    "event_name": params["event_name"],
                    "identifier": params["identifier"],
                    "payload": {"value": params["payload[value]"]},
                },
            )
            if self.meter_event_failures > 0:
                self.meter_event_failures -= 1
                # Recorded, but the answer is lost: the client retries or gives up.
                return (500, {"error": {"type": "api_error", "message": "lost"}})
            self._idempotent[key] = answer
            return answer


def _require(params: dict[str, str], *names: str) -> None:
    for name in names:
        if not params.get(name):
            raise StripeError(400, f"Missing required param: {name}.", name)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStripe

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else url.query
        if (
            method == "POST"
            and length
            and not self.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"
            )
        ):
            self._send(400, {"error": {"message": "Stripe takes form-encoded bodies."}})
            return
        params = dict(parse_qsl(body, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            answer = self.fake.handle(method, url.path, params, headers)
        except StripeError as exc:
            kind = "authentication_error" if exc.status == 401 else "invalid_request_error"
            error = {"type": kind, "message": str(exc)}
            if exc.param:
                error["param"] = exc.param
            self._send(exc.status, {"error": error})
            return
        status, payload = answer if isinstance(answer, tuple) else (200, answer)
        self._send(status, payload)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", f"req_{secrets.token_hex(6)}")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class FakeStripeServer:
    def __init__(self) -> None:
        self.fake = FakeStripe()
        handler = type("Handler", (_Handler,), {"fake": self.fake})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.fake.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeStripe:
        self.thread.start()
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
