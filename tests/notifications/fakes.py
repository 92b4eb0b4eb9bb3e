"""Fake providers on 127.0.0.1 that check what the real ones check.

* ``FakeTwilio`` — HTTP basic auth ``AccountSid:AuthToken``, the account in the path, form
  fields ``To``/``From``/``Body`` (or ``ContentSid``), E.164 numbers (``whatsapp:`` for WhatsApp)
  and Twilio's error shape (``{"code": 21211, "message": …, "status": 400}``).
* ``FakeTelegram`` — the bot token in the path (``/bot<token>/<method>``), JSON bodies, known
  chats, ``reply_markup.inline_keyboard`` shape (1–64 bytes of ``callback_data``), and
  ``editMessageText``'s "message is not modified".
* ``FakeSlack`` — ``Authorization: Bearer xoxb-…``, JSON with a charset, Block Kit shape, HTTP
  200 with ``{"ok": false, "error": …}`` for failures, ``chat.update`` of a known message.
* ``FakePushService`` — RFC 8292 VAPID (``Authorization: vapid t=<JWT>,k=<key>``; the JWT's
  ES256 signature verified with ``k``, which must be the subscription's application server
  key; ``aud`` the endpoint's origin; ``exp`` within 24 h), RFC 8030 ``TTL``, and RFC 8291
  ``Content-Encoding: aes128gcm`` bodies, which it decrypts with the subscription's keys.

Each fake records what it accepted, and ``script`` holds canned answers (status, headers,
body) returned, first in first out, before the normal handling — to make a provider fail.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import http_ece
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from escalations.models import Escalation
from notifications.models import ContactPoint, Delivery

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # Wall clock (``time.time()``) when the request line and headers had arrived: the
    # provider's receipt time, which ``bench/notification_fanout.py`` measures latency to.
    received_at: float = field(default_factory=time.time)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 calling ``self.handle`` for each request."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: list[Answer] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                received_at = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    received_at,
                )
                with fake.lock:
                    fake.requests.append(request)
                    scripted = fake.script.pop(0) if fake.script else None
                    status, headers, body = scripted or fake.handle(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = _serve
            do_GET = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, request: Request) -> Answer:
        raise NotImplementedError

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Twilio ---------------------------------------------------------------------------------

E164 = re.compile(r"\+[1-9]\d{6,14}")


class FakeTwilio(FakeServer):
    account_sid = "AC" + "0" * 31 + "1"
    auth_token = "twilio-auth-token-fake"
    from_number = "+15005550006"
    whatsapp_from = "+14155238886"

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, str]] = []

    def _error(self, status: int, code: int, message: str) -> Answer:
        return _json(status, {"code": code, "message": message, "status": status})

    def handle(self, request: Request) -> Answer:
        if request.path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return self._error(404, 20404, "The requested resource was not found")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return self._error(401, 20003, "Authenticate")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return self._error(400, 20001, "Unsupported content type")
        form = request.form()
        to, sender = form.get("To", ""), form.get("From", "")
        whatsapp = to.startswith("whatsapp:")
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not E164.fullmatch(to.removeprefix("whatsapp:")):
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        own = f"whatsapp:{self.whatsapp_from}" if whatsapp else self.from_number
        if sender != own:
            return self._error(
                400, 21606, f"The 'From' phone number provided ({sender}) is not valid."
            )
        if not form.get("Body") and not form.get("ContentSid"):
            return self._error(400, 21602, "Message body is required.")
        if form.get("ContentSid"):
            json.loads(form.get("ContentVariables", "{}"))
        if len(form.get("Body", "")) > 1600:
            return self._error(400, 21617, "The concatenated message body exceeds 1600.")
        sid = "SM" + secrets.token_hex(16)
        self.messages.append({**form, "sid": sid})
        return _json(201, {"sid": sid, "status": "queued", "to": to, "from": sender})


# --- Telegram -------------------------------------------------------------------------------


class FakeTelegram(FakeServer):
    bot_token = "123456789:AAFakeTelegramBotTokenForTests_xyz"

    def __init__(self) -> None:
        super().__init__()
        self.chats: set[str] = set()
        self.messages: dict[tuple[str, int], dict[str, Any]] = {}
        self.edits: list[dict[str, Any]] = []
        self._next_id = 100

    def _fail(self, status: int, description: str) -> Answer:
        return _json(status, {"ok": False, "error_code": status, "description": description})

    def handle(self, request: Request) -> Answer:
        match = re.fullmatch(r"/bot([^/]+)/(\w+)", request.path)
        if match is None or match[1] != self.bot_token:
            return self._fail(401, "Unauthorized")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._fail(400, "Bad Request: unsupported content type")
        body = request.json()
        method = match[2]
        if method == "sendMessage":
            return self._send(body)
        if method == "editMessageText":
            return self._edit(body)
        return self._fail(404, "Not Found: method not found")

    def _markup_problem(self, markup: Any) -> str | None:
        if markup is None:
            return None
        keyboard = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if not isinstance(keyboard, list) or not all(isinstance(r, list) for r in keyboard):
            return "Bad Request: can't parse inline keyboard button: field must be an Array"
        for row in keyboard:
            for button in row:
                if not isinstance(button.get("text"), str) or not button["text"]:
                    return "Bad Request: inline keyboard button text is empty"
                kinds = [k for k in ("callback_data", "url") if k in button]
                if len(kinds) != 1:
                    return "Bad Request: can't parse inline keyboard button"
                if "callback_data" in button and not (
                    1 <= len(button["callback_data"].encode()) <= 64
                ):
                    return "Bad Request: BUTTON_DATA_INVALID"
                if "url" in button and not button["url"].startswith("https://"):
                    return "Bad Request: inline keyboard button URL is invalid"
        return None

    def _send(self, body: dict[str, Any]) -> Answer:
        chat_id = str(body.get("chat_id", ""))
        if not chat_id:
            return self._fail(400, "Bad Request: chat_id is empty")
        if not body.get("text"):
            return self._fail(400, "Bad Request: message text is empty")
        if problem := self._markup_problem(body.get("reply_markup")):
            return self._fail(400, problem)
        if chat_id not in self.chats:
            return self._fail(400, "Bad Request: chat not found")
        self._next_id += 1
        message = {
            "message_id": self._next_id,
            "chat": {"id": int(chat_id), "type": "private"},
            "date": int(time.time()),
            "text": body["text"],
            "reply_markup": body.get("reply_markup"),
        }
        self.messages[(chat_id, self._next_id)] = message
        return _json(200, {"ok": True, "result": message})

    def _edit(self, body: dict[str, Any]) -> Answer:
        key = (str(body.get("chat_id", "")), int(body.get("message_id") or 0))
        message = self.messages.get(key)
        if message is None:
            return self._fail(400, "Bad Request: message to edit not found")
        if problem := self._markup_problem(body.get("reply_markup")):
            return self._fail(400, problem)
        if message["text"] == body.get("text") and message["reply_markup"] == body.get(
            "reply_markup"
        ):
            return self._fail(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup",
            )
        message.update(text=body.get("text"), reply_markup=body.get("reply_markup"))
        self.edits.append(body)
        return _json(200, {"ok": True, "result": message})


# --- Slack ----------------------------------------------------------------------------------

_BLOCK_TYPES = {"section", "actions", "context", "divider", "header"}


class FakeSlack(FakeServer):
    bot_token = "xoxb-1234-5678-FakeSlackBotToken"

    def __init__(self) -> None:
        super().__init__()
        self.users: set[str] = set()
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.updates: list[dict[str, Any]] = []
        self.ephemeral: list[dict[str, Any]] = []
        self._ts = 1_700_000_000

    def _fail(self, error: str) -> Answer:
        return _json(200, {"ok": False, "error": error})

    def handle(self, request: Request) -> Answer:
        authorization = request.headers.get("authorization", "")
        if not authorization:
            return self._fail("not_authed")
        if authorization != f"Bearer {self.bot_token}":
            return self._fail("invalid_auth")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._fail("invalid_form_data")
        body = request.json()
        method = request.path.lstrip("/")
        if "blocks" in body and (problem := self._blocks_problem(body["blocks"])):
            return self._fail(problem)
        if method == "chat.postMessage":
            user = body.get("channel", "")
            if user not in self.users:
                return self._fail("channel_not_found")
            if not body.get("text") and not body.get("blocks"):
                return self._fail("no_text")
            self._ts += 1
            channel, ts = f"D{user[1:]}", f"{self._ts}.000100"
            self.messages[(channel, ts)] = body
            return _json(200, {"ok": True, "channel": channel, "ts": ts, "message": body})
        if method == "chat.update":
            key = (body.get("channel", ""), body.get("ts", ""))
            if key not in self.messages:
                return self._fail("message_not_found")
            self.messages[key] = body
            self.updates.append(body)
            return _json(200, {"ok": True, "channel": key[0], "ts": key[1]})
        if method == "chat.postEphemeral":
            if body.get("user") not in self.users:
                return self._fail("user_not_in_channel")
            self.ephemeral.append(body)
            return _json(200, {"ok": True, "message_ts": f"{self._ts}.000200"})
        return self._fail("unknown_method")

    def _blocks_problem(self, blocks: Any) -> str | None:
        if not isinstance(blocks, list) or len(blocks) > 50:
            return "invalid_blocks"
        action_ids: set[str] = set()
        for block in blocks:
            if block.get("type") not in _BLOCK_TYPES:
                return "invalid_blocks"
            if block["type"] == "section":
                text = block.get("text") or {}
                if text.get("type") not in ("mrkdwn", "plain_text") or not text.get("text"):
                    return "invalid_blocks"
                if len(text["text"]) > 3000:
                    return "invalid_blocks"
            if block["type"] in ("actions", "context"):
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                    return "invalid_blocks"
                for element in elements:
                    if element.get("type") == "button":
                        if (element.get("text") or {}).get("type") != "plain_text":
                            return "invalid_blocks"
                        if element.get("action_id") in action_ids:
                            return "invalid_blocks"
                        action_ids.add(element.get("action_id"))
                        if len(element.get("value", "")) > 2000:
                            return "invalid_blocks"
        return None


# --- Web Push -------------------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscription:
    """A browser's push subscription: its ECDH key pair and auth secret (the browser keeps the
    private key; the page sends ``endpoint`` + ``keys`` to the server)."""

    endpoint: str
    application_server_key: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    messages: list[dict[str, Any]] = field(default_factory=list)
    gone: bool = False

    def as_json(self) -> dict[str, Any]:
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


class FakePushService(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: dict[str, Subscription] = {}

    def subscribe(self, application_server_key: str) -> Subscription:
        """What ``pushManager.subscribe({applicationServerKey})`` does in a browser."""
        token = secrets.token_urlsafe(12)
        subscription = Subscription(f"{self.url}/wpush/v2/{token}", application_server_key)
        self.subscriptions[token] = subscription
        return subscription

    def _fail(self, status: int, reason: str) -> Answer:
        return _json(status, {"code": status, "errno": 0, "error": reason, "message": reason})

    def handle(self, request: Request) -> Answer:
        match = re.fullmatch(r"/wpush/v2/([\w-]+)", request.path)
        subscription = self.subscriptions.get(match[1]) if match else None
        if subscription is None:
            return self._fail(404, "Not Found")
        if subscription.gone:
            return self._fail(410, "Gone")
        if problem := self._vapid_problem(request, subscription):
            return self._fail(401 if "JWT" in problem else 403, problem)
        if "ttl" not in request.headers or not request.headers["ttl"].isdigit():
            return self._fail(400, "Missing TTL header")
        if request.headers.get("content-encoding") != "aes128gcm":
            return self._fail(415, "Unsupported Content-Encoding")
        topic = request.headers.get("topic")
        if topic is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic):
            return self._fail(400, "Topic must be 1-32 URL-safe base64 characters")
        if len(request.body) > 4096:
            return self._fail(413, "Payload Too Large")
        try:
            plain = http_ece.decrypt(
                request.body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth,
                version="aes128gcm",
            )
        except Exception:
            return self._fail(400, "Decryption failed")
        subscription.messages.append(
            {
                "payload": json.loads(plain),
                "ttl": int(request.headers["ttl"]),
                "urgency": request.headers.get("urgency", "normal"),
                "topic": topic,
            }
        )
        return 201, {"Location": f"{self.url}/m/{secrets.token_hex(8)}"}, b""

    def _vapid_problem(self, request: Request, subscription: Subscription) -> str | None:
        match = re.fullmatch(
            r"vapid t=([\w-]+\.[\w-]+\.[\w-]+),\s*k=([\w-]+)",
            request.headers.get("authorization", ""),
        )
        if match is None:
            return "JWT missing: Authorization must be 'vapid t=…, k=…'"
        token, key = match[1], match[2]
        if key != subscription.application_server_key:
            return "VAPID key does not match the subscription's applicationServerKey"
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
        if header.get("alg") != "ES256":
            return "JWT alg must be ES256"
        signature = b64url_decode(signature_b64)
        if len(signature) != 64:
            return "JWT signature must be raw r||s"
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        try:
            public.verify(
                encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                ),
                f"{header_b64}.{claims_b64}".encode(),
                ec.ECDSA(hashes.SHA256()),
            )
        except Exception:
            return "JWT signature does not verify"
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(subscription.endpoint))
        if claims.get("aud") != origin:
            return f"JWT aud must be {origin}"
        now = time.time()
        if not now < int(claims.get("exp", 0)) <= now + 24 * 3600:
            return "JWT exp must be within 24 hours"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return "JWT sub must be a mailto: or https: URL"
        return None


# --- Wiring the fakes into settings ------------------------------------------------------------


@contextmanager
def twilio_configured(settings: Any) -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        settings.TWILIO_API_BASE = fake.url
        settings.TWILIO_ACCOUNT_SID = fake.account_sid
        settings.TWILIO_AUTH_TOKEN = fake.auth_token
        settings.TWILIO_FROM_NUMBER = fake.from_number
        settings.TWILIO_WHATSAPP_FROM = fake.whatsapp_from
        settings.TWILIO_WHATSAPP_CONTENT_SID = ""
        yield fake  # type: ignore[misc]


@contextmanager
def telegram_configured(settings: Any) -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        settings.TELEGRAM_API_BASE = fake.url
        settings.TELEGRAM_BOT_TOKEN = fake.bot_token
        settings.TELEGRAM_BOT_USERNAME = "AwaitHumanTestBot"
        settings.TELEGRAM_WEBHOOK_SECRET = "telegram-webhook-secret-for-tests"
        yield fake  # type: ignore[misc]


@contextmanager
def slack_configured(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        settings.SLACK_API_BASE = fake.url
        settings.SLACK_BOT_TOKEN = fake.bot_token
        settings.SLACK_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
        yield fake  # type: ignore[misc]


@contextmanager
def push_configured(settings: Any) -> Iterator[FakePushService]:
    from notifications.management.commands.vapid_keys import vapid_key_pair

    public, private = vapid_key_pair()
    with FakePushService() as fake:
        settings.VAPID_PUBLIC_KEY = public
        settings.VAPID_PRIVATE_KEY = private
        settings.VAPID_SUBJECT = "mailto:ops@acme.test"
        settings.OUTBOUND_ALLOW_PRIVATE = True  # the fake listens on 127.0.0.1
        yield fake  # type: ignore[misc]


def delivery_sent(escalation_id: str, point: ContactPoint) -> Delivery:
    """Send one delivery through the point's real transport, as the deliver task would, and
    record it as sent."""
    from notifications.transports import TRANSPORTS

    escalation = Escalation.objects.get(public_id=escalation_id)
    delivery = Delivery.objects.create(
        escalation=escalation,
        # A later message to the same person (a reminder) is another generation.
        generation=Delivery.objects.filter(
            escalation=escalation, membership=point.membership
        ).count(),
        contact_point=point,
        membership=point.membership,
        channel=point.channel,
        status=Delivery.Status.SENDING,
        attempts=1,
    )
    delivery = Delivery.objects.select_related("escalation", "contact_point").get(pk=delivery.pk)
    provider_id = TRANSPORTS[point.channel]().send(delivery)
    delivery.status, delivery.provider_id = Delivery.Status.SENT, provider_id
    delivery.save(update_fields=["status", "provider_id"])
    return delivery
