"""AwaitHuman settings, driven by the environment.

Two run modes share this file (see README "Run modes"):

* **Embedded default** — no ``DATABASE_URL``/``REDIS_URL``: SQLite file, in-memory channel layer,
  Celery tasks run in-process (``task_always_eager``), the ASGI process ticks the timers.
* **Production** — ``DATABASE_URL`` (PostgreSQL, psycopg 3 with Django's pool) and ``REDIS_URL``
  (channel layer, Celery broker, rate limits, the wait dispatcher's pub/sub).

Every variable is listed in ``.env.example``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from .env import envbool, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
# Templates and static files ship inside the package (awaithuman/templates and awaithuman/static
# link to the checkout's folders), so an installed wheel has them too.
PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir() -> Path:
    """Where the embedded default keeps its SQLite file, secret key, demo credentials and
    collected static files: ``AWAITHUMAN_DATA_DIR``; else the checkout (``make run``); else, for
    an installed ``awaithuman`` command, the folder it is started in."""
    configured = envstr("AWAITHUMAN_DATA_DIR")
    if configured:
        return Path(configured).resolve()
    return BASE_DIR if (BASE_DIR / "manage.py").exists() else Path.cwd()


DATA_DIR = _data_dir()

DATABASE_URL = envstr("DATABASE_URL")
REDIS_URL = envstr("REDIS_URL")
EMBEDDED = not REDIS_URL

DEBUG = envbool("DEBUG", default=False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else a random key kept in ``.secret_key``.

    There is no built-in default: a fresh checkout makes its own key on first start, so two
    installations never share one.
    """
    key = envstr("SECRET_KEY")
    if key:
        if len(key) < 50:
            raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters long")
        return key
    path = DATA_DIR / ".secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
AWAITHUMAN_BASE_URL = envstr("AWAITHUMAN_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [AWAITHUMAN_BASE_URL])

INSTALLED_APPS = [
    "daphne",
    "awaithuman.apps.AwaitHumanAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "allauth",
    "allauth.account",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "audit",
    "tenants",
    "escalations",
    "notifications",
    "webhooks",
    "suggestions",
]

MIDDLEWARE = [
    "awaithuman.middleware.RequestIdMiddleware",
    "awaithuman.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "tenants.middleware.organization.CurrentOrganizationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "tenants.middleware.two_factor.TwoFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tenants.middleware.plan_limits.PlanLimitMiddleware",
]

ROOT_URLCONF = "awaithuman.urls"
ASGI_APPLICATION = "awaithuman.asgi.application"
WSGI_APPLICATION = None

TEMPLATES: list[dict[str, Any]] = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [PACKAGE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.views.console_context",
                "tenants.billing_views.billing_context",
            ],
        },
    },
]

# --- Database ---
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL or f"sqlite:///{DATA_DIR / 'db.sqlite3'}", conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's own psycopg 3 pool: cheap checkouts for short requests; the long-poll holds no
    # connection at all while it waits, so the pool is sized for requests, not for waiters.
    # A database that is down or unreachable fails fast: the connect gives up after
    # DATABASE_CONNECT_TIMEOUT seconds and a request waits at most DATABASE_POOL_TIMEOUT for a
    # connection, then gets 503 with Retry-After (awaithuman.problems) instead of hanging.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": envint("DATABASE_POOL_MIN", 2, minimum=0),
        "max_size": envint("DATABASE_POOL_MAX", 20, minimum=1),
        "timeout": envint("DATABASE_POOL_TIMEOUT", 3, minimum=1),
    }
    # libpq's minimum is 2 seconds.
    DATABASES["default"]["OPTIONS"]["connect_timeout"] = envint(
        "DATABASE_CONNECT_TIMEOUT", 2, minimum=2
    )
    DATABASES["default"]["TEST"] = {"NAME": envstr("TEST_DATABASE_NAME", "test_awaithuman")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the busy timeout
        # instead of one failing with "database is locked" when it upgrades its lock.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not shared-cache memory: concurrency tests need SQLite's real locking. One file
    # per process, so two test runs in one checkout never share a database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".pytest-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels, Celery, Redis ---
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # The pub/sub layer: one Redis subscription per process per group, fanned out to the
            # process's sockets in memory. The core (list-based) layer pushes one Redis message
            # per socket and dropped 3% of frames at 1,000 operators (bench/RESULTS.md); the
            # queue resyncs on reconnect, so at-most-once delivery is what we want.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults to 100 connections and a 5 s socket timeout: size the pool
                # for the load and let the subscription wait without a timeout.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": envint("REDIS_MAX_CONNECTIONS", 1000, minimum=10),
                        "socket_timeout": None,
                    }
                ],
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Django's cache holds allauth's sign-in limits (failed logins per address and per IP, sign-ups,
# password resets): in production every process must count in the same place, or six failures
# lock one process while the next one still takes the password.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "awaithuman",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = EMBEDDED
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker never gives up on the broker: Celery's default of 100 reconnection attempts (about 50
# minutes with its backoff) ends the worker in a long Redis outage, and everything queued waits
# for a manual restart. tests/notifications/test_worker_outage.py takes Redis away under load.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Priorities on the Redis broker (0 first): beat's ticks (timers, sweeps) keep the default 0,
# the bulk of sends runs at 6, so a burst of thousands of notifications never holds up an
# escalation's timeout or level change behind it.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "priority_steps": list(range(10)),
    "sep": ":",
    "queue_order_strategy": "priority",
    # A Redis host that vanishes without closing its connections (a dropped network path) is
    # noticed by the timeouts and the periodic health check, not after the kernel's TCP timeout.
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "socket_keepalive": True,
    "health_check_interval": 10,
}
CELERY_TASK_ROUTES = {
    name: {"priority": 6}
    for name in (
        "notifications.tasks.deliver",
        "notifications.tasks.deliver_many",
        "webhooks.tasks.webhook_deliver",
        "notifications.tasks.messages_update_after_decision",
    )
}
CELERY_TIMEZONE = "UTC"
# How often chains that grew get a signed checkpoint.
AUDIT_CHECKPOINT_SECONDS = envint("AUDIT_CHECKPOINT_SECONDS", 60, minimum=1)
# At most this often, an organization's latest checkpoint is e-mailed to its checkpoint address
# (tenants.checkpoint_mail); the job looks every hour.
AUDIT_CHECKPOINT_EMAIL_HOURS = envint("AUDIT_CHECKPOINT_EMAIL_HOURS", 24, minimum=1)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "escalation-timers": {
        "task": "escalations.tasks.timers_tick",
        "schedule": 1.0,
        "options": {"expires": 5},
    },
    # The safety net under the after-commit nudges (escalations.outbox).
    "outbox-dispatch": {
        "task": "escalations.tasks.outbox_dispatch_task",
        "schedule": 1.0,
        "options": {"expires": 5},
    },
    "idempotency-purge": {"task": "escalations.tasks.idempotency_purge", "schedule": 3600.0},
    # Payloads past their organization's retention are replaced by digests (escalations.redaction).
    "payload-retention": {"task": "escalations.tasks.payloads_redact", "schedule": 3600.0},
    # Finished days of decisions pre-aggregated for the insights' charts (escalations.rollup); each
    # run also recomputes the last two finished days, for decisions stamped on them late.
    "insights-rollup": {"task": "escalations.tasks.insights_rollup_task", "schedule": 600.0},
    # A signed checkpoint of every audit chain that grew (audit.checkpoints).
    "audit-checkpoints": {
        "task": "audit.tasks.checkpoints_sign",
        "schedule": float(AUDIT_CHECKPOINT_SECONDS),
        "options": {"expires": 60},
    },
    "audit-checkpoint-emails": {
        "task": "tenants.tasks.checkpoint_emails",
        "schedule": 3600.0,
        "options": {"expires": 3600},
    },
}

# --- API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.auth.HasScope"],
    "DEFAULT_PARSER_CLASSES": ["awaithuman.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "awaithuman.problems.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AwaitHuman API",
    "DESCRIPTION": (
        "Escalation-as-a-service for AI agents: ask a human, wait for the decision, get a typed "
        "answer. Authenticate with `Authorization: Bearer ahk_…`. Errors are RFC 9457 "
        "`application/problem+json`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ResponseOutcomeEnum": "escalations.models.Response.Outcome",
        "PolicyOutcomeEnum": "escalations.models.Policy.Outcome",
        "DecisionOutcomeEnum": ["answered", "approved", "cancelled", "expired", "rejected"],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "escalations.schema.add_wait_operation",
        "escalations.schema.forbid_unknown_fields",
    ],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
}

# Request bodies: the API refuses more than this with 413 (problem+json names the limit).
API_MAX_BODY_BYTES = envint("API_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
API_MAX_JSON_DEPTH = 32
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

# Per-key rate limit (requests per window); a key may carry its own limit.
RATE_LIMIT_DEFAULT = envint("RATE_LIMIT_DEFAULT", 600, minimum=1)
RATE_LIMIT_WINDOW_SECONDS = envint("RATE_LIMIT_WINDOW_SECONDS", 60, minimum=1)

# --- Metrics (awaithuman/metrics.py, docs/operations.md) ------------------------------------
# /metrics answers a scraper that sends METRICS_TOKEN as a bearer token or connects from an
# address in METRICS_ALLOW_FROM (IPs or CIDRs); with neither set, nobody. Several processes
# share their samples through PROMETHEUS_MULTIPROC_DIR (read by prometheus-client itself).
METRICS_ENABLED = envbool("METRICS_ENABLED", default=True)
METRICS_TOKEN = envstr("METRICS_TOKEN")
METRICS_ALLOW_FROM = envlist("METRICS_ALLOW_FROM", [])
for _network in METRICS_ALLOW_FROM:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as error:
        raise ImproperlyConfigured(f"METRICS_ALLOW_FROM: {error}") from None
# One series per organization for the escalation counters: off unless the operator opts in.
METRICS_ORGANIZATION_LABELS = envbool("METRICS_ORGANIZATION_LABELS", default=False)

# The live queue's sockets close at once on sign-out; this re-check catches sessions that end
# without one (deleted, expired, a password changed elsewhere).
QUEUE_SESSION_RECHECK_SECONDS = envint("QUEUE_SESSION_RECHECK_SECONDS", 15, minimum=1)

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
WAIT_MAX_SECONDS = 60
# The embedded default runs Celery beat's schedule (below) in the ASGI process; production runs
# beat.
TIMERS_IN_PROCESS = envbool("TIMERS_IN_PROCESS", EMBEDDED)
# After a commit that owes effects, at most one outbox dispatch task is queued per this many
# seconds across the deployment; the task drains everything due.
OUTBOX_NUDGE_SECONDS = 1.0

AUDIT_ORGANIZATION_MODEL = "tenants.Organization"

# --- Billing (Stripe; tenants/billing/) -------------------------------------------------------
# Off without a Stripe key: every organization is unlimited and Stripe is never called.
STRIPE_SECRET_KEY = envstr("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = envstr("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = envstr("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
STRIPE_PRICE_TEAM = envstr("STRIPE_PRICE_TEAM")
STRIPE_PRICE_BUSINESS = envstr("STRIPE_PRICE_BUSINESS")
# Optional metered Price added to every Checkout, billed from the meter events we report.
STRIPE_PRICE_ESCALATIONS = envstr("STRIPE_PRICE_ESCALATIONS")
STRIPE_METER_EVENT_NAME = envstr("STRIPE_METER_EVENT_NAME", "awaithuman_escalations")
BILLING_ENABLED = envbool("BILLING_ENABLED", bool(STRIPE_SECRET_KEY))
if BILLING_ENABLED and not STRIPE_SECRET_KEY:
    raise ImproperlyConfigured("BILLING_ENABLED needs STRIPE_SECRET_KEY")
BILLING_GRACE_DAYS = envint("BILLING_GRACE_DAYS", 7, minimum=0)
BILLING_USAGE_REPORT_SECONDS = envint("BILLING_USAGE_REPORT_SECONDS", 3600, minimum=60)
CELERY_BEAT_SCHEDULE["billing-usage-report"] = {
    "task": "tenants.tasks.billing_usage_report",
    "schedule": float(BILLING_USAGE_REPORT_SECONDS),
}
CELERY_BEAT_SCHEDULE["billing-grace-expire"] = {
    "task": "tenants.tasks.billing_grace_expire",
    "schedule": 3600.0,
}

# --- Notification providers (notifications/transports/) --------------------------------------
# Each provider is off until its credentials are set. Base URLs are settings so tests (and a
# regional or proxied deployment) can point them elsewhere; the inbound webhooks that answer
# escalations from a channel live under /hooks/ (notifications/urls.py).
NOTIFICATION_HTTP_TIMEOUT = envint("NOTIFICATION_HTTP_TIMEOUT", 15, minimum=1)
# Twilio (SMS and WhatsApp).
TWILIO_API_BASE = envstr("TWILIO_API_BASE", "https://api.twilio.com").rstrip("/")
TWILIO_ACCOUNT_SID = envstr("TWILIO_ACCOUNT_SID")
TWILIO_AUTH_TOKEN = envstr("TWILIO_AUTH_TOKEN")
TWILIO_FROM_NUMBER = envstr("TWILIO_FROM_NUMBER")
TWILIO_WHATSAPP_FROM = envstr("TWILIO_WHATSAPP_FROM")
# Optional Content Template (twilio/quick-reply) for WhatsApp approve/reject buttons; see
# notifications/transports/twilio.py for the variables it receives.
TWILIO_WHATSAPP_CONTENT_SID = envstr("TWILIO_WHATSAPP_CONTENT_SID")
# Telegram Bot API.
TELEGRAM_API_BASE = envstr("TELEGRAM_API_BASE", "https://api.telegram.org").rstrip("/")
TELEGRAM_BOT_TOKEN = envstr("TELEGRAM_BOT_TOKEN")
TELEGRAM_BOT_USERNAME = envstr("TELEGRAM_BOT_USERNAME")
TELEGRAM_WEBHOOK_SECRET = envstr("TELEGRAM_WEBHOOK_SECRET")
# Slack app (bot token + signing secret of its interactivity endpoint).
SLACK_API_BASE = envstr("SLACK_API_BASE", "https://slack.com/api").rstrip("/")
SLACK_BOT_TOKEN = envstr("SLACK_BOT_TOKEN")
SLACK_SIGNING_SECRET = envstr("SLACK_SIGNING_SECRET")
# Web Push (VAPID): `python manage.py vapid_keys` prints a pair.
VAPID_PUBLIC_KEY = envstr("VAPID_PUBLIC_KEY")
VAPID_PRIVATE_KEY = envstr("VAPID_PRIVATE_KEY")
VAPID_SUBJECT = envstr("VAPID_SUBJECT", "mailto:admin@localhost")
if bool(VAPID_PUBLIC_KEY) != bool(VAPID_PRIVATE_KEY):
    raise ImproperlyConfigured("VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY are set together")

# --- Notification delivery (notifications/deliveries.py, notifications/tasks.py) ----------------
# A worker holds a claimed delivery this long; a worker killed mid-send leaves it ``sending``
# until then, and the sweep may claim it again.
NOTIFICATION_DELIVERY_LEASE_SECONDS = envint("NOTIFICATION_DELIVERY_LEASE_SECONDS", 60, minimum=1)
# Transient failures retry after base × 2^(attempt-1) seconds with jitter (or the provider's
# Retry-After when longer), up to this many attempts; then the person's next contact point.
NOTIFICATION_DELIVERY_MAX_ATTEMPTS = envint("NOTIFICATION_DELIVERY_MAX_ATTEMPTS", 6, minimum=1)
NOTIFICATION_RETRY_BASE_SECONDS = envint("NOTIFICATION_RETRY_BASE_SECONDS", 5, minimum=1)
# How often the sweep re-queues deliveries whose task was lost or whose lease ran out.
NOTIFICATION_SWEEP_SECONDS = envint("NOTIFICATION_SWEEP_SECONDS", 5, minimum=1)
# A new delivery whose send task never ran (lost with a Redis restart, or never published while
# the broker was down) is queued again by the sweep once it is this old.
NOTIFICATION_LOST_TASK_SECONDS = envint("NOTIFICATION_LOST_TASK_SECONDS", 60, minimum=1)
CELERY_BEAT_SCHEDULE["notification-deliveries-due"] = {
    "task": "notifications.tasks.deliveries_due",
    "schedule": float(NOTIFICATION_SWEEP_SECONDS),
    "options": {"expires": NOTIFICATION_SWEEP_SECONDS * 2},
}

# --- Agent callbacks and outbound webhooks (webhooks/sending.py, awaithuman/outbound.py) --------
# Outbound URLs resolving to private, loopback, link-local, CGNAT, … addresses are refused at
# connect time, except in the embedded default, where local receivers are the point.
OUTBOUND_ALLOW_PRIVATE = envbool("OUTBOUND_ALLOW_PRIVATE", EMBEDDED)
WEBHOOK_TIMEOUT_SECONDS = 15.0
# A sender's hold on a message: longer than the HTTP timeout plus a busy queue, so a live sender
# is never overtaken; a message whose worker died is sent again (same webhook-id) after it.
WEBHOOK_CLAIM_SECONDS = envint("WEBHOOK_CLAIM_SECONDS", 120, minimum=1)
# Seconds before each attempt, counted from the previous failure: at once, then 5 s, 5 min,
# 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h (a day of retries, as Standard Webhooks senders do);
# each delay gets ±10 % jitter. Tests shorten it.
WEBHOOK_RETRY_SCHEDULE = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
WEBHOOK_SECRET_OVERLAP_SECONDS = 24 * 3600
CELERY_BEAT_SCHEDULE["webhook-messages-due"] = {
    "task": "webhooks.tasks.webhook_messages_due",
    "schedule": 1.0,
    "options": {"expires": 5},
}

# --- Auth, i18n, static ---------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"

# Accounts (django-allauth): e-mail + password, the sign-up form also names the organization
# (tenants.forms.SignupForm). Verification is "optional" by default so a self-hosted install works
# before SMTP is set up (the mail is still sent and the console prints it); set "mandatory" in
# production once mail goes out. An invitation link counts as proof of the address.
ACCOUNT_ADAPTER = "tenants.account_adapter.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_SIGNUP_FORM_CLASS = "tenants.forms.SignupForm"
ACCOUNT_EMAIL_VERIFICATION = envstr("ACCOUNT_EMAIL_VERIFICATION", "optional")
if ACCOUNT_EMAIL_VERIFICATION not in {"none", "optional", "mandatory"}:
    raise ImproperlyConfigured("ACCOUNT_EMAIL_VERIFICATION must be none, optional or mandatory")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[AwaitHuman] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if AWAITHUMAN_BASE_URL.startswith("https://") else "http"
# allauth's rate limits (login failures per IP and per account, sign-ups, password resets, …) are
# on with its defaults; they count in Django's cache (CACHES above: Redis in production).

# Two-factor (django-otp): TOTP with recovery codes. A failed code locks the device for
# 2^(n-1) seconds after the n-th failure in a row (django-otp's throttling; keep the factor > 0).
OTP_TOTP_ISSUER = envstr("OTP_TOTP_ISSUER", "AwaitHuman")
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1
INVITATION_TTL_DAYS = 7

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [PACKAGE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise serves from finders too; it only needs the folder
WHITENOISE_USE_FINDERS = True


def _static_headers(headers: Any, path: str, url: str) -> None:
    """The service worker lives under /static/ but controls the whole console (scope "/"), so
    the installed app's pages are its clients."""
    if url.endswith("/console/sw.js"):
        headers["Service-Worker-Allowed"] = "/"


WHITENOISE_ADD_HEADERS_FUNCTION = _static_headers
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

EMAIL_BACKEND = envstr("EMAIL_BACKEND", "awaithuman.mail.ConsoleSummaryBackend")
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "AwaitHuman <noreply@localhost>")
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", False)  # implicit TLS, usually port 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("Set EMAIL_USE_TLS (STARTTLS) or EMAIL_USE_SSL, not both")
EMAIL_TIMEOUT = 15

# --- Security (production-ready whenever DEBUG is off and HTTPS is in front) ---
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", AWAITHUMAN_BASE_URL.startswith("https://"))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): the console, admin, sign-in and API docs load scripts and
# styles from this origin only; no inline script, event handler or style attribute anywhere
# (behaviours are data- attributes read by static/console/forms.js). connect-src 'self' covers
# the queue's websocket on the same origin.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "manifest-src": [SELF],
        "worker-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# LOG_FORMAT=text (default): one readable line per event. LOG_FORMAT=json: one JSON object per
# line (python-json-logger) for log shippers, with the same request, organization, escalation
# and trace ids as fields.
LOG_FORMAT = envstr("LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "awaithuman.middleware.RequestContextFilter"}},
    "formatters": {
        "text": {
            "format": (
                "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s "
                "org=%(organization)s escalation=%(escalation)s %(message)s"
            ),
        },
        "json": {"()": "awaithuman.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_context"],
        },
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # httpx logs every request's full URL at INFO: callback URLs and provider paths (a
        # Telegram bot token) can carry secrets.
        "httpx": {"level": "WARNING"},
    },
}
# Celery replaces the root logger's handlers in a worker unless told not to; JSON lines need
# ours.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT == "text"
