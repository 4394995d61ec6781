"""Settings, all read from the environment so one code base serves a laptop, CI and production.

Every variable is documented in the README's "Configuration" table. Debug is off unless `DEBUG` says otherwise,
and without debug a `SECRET_KEY` must be given: a guessable key would let anyone forge sessions.
"""

import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    """Read a flag: 1, true, yes or on (any case) is true, anything else false, unset the default."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Read an integer; unset or empty gives the default."""
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: str = "") -> list[str]:
    """Read a comma-separated list, dropping blanks around and between items."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (export SECRET_KEY=... or DEBUG=1).")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

VAR_DIR = Path(os.environ.get("VIGIA_VAR_DIR", BASE_DIR / "var"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "moderation",
]

MIDDLEWARE = [
    "moderation.uploads.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "moderation.middleware.ContentSecurityPolicyMiddleware",
    "moderation.requestcontext.RequestContextMiddleware",
    # Last, as django-axes asks: it answers a locked-out login before the view runs.
    "axes.middleware.AxesMiddleware",
]
# Behind N proxies that append to X-Forwarded-For, the caller's address is the Nth from the end (0: REMOTE_ADDR).
VIGIA_TRUSTED_PROXIES = env_int("VIGIA_TRUSTED_PROXIES", 0)

ROOT_URLCONF = "moderation.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "moderation.context_processors.desk",
            ],
        },
    },
]

WSGI_APPLICATION = "moderation.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'vigia.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        # A persistent connection the server dropped (a PostgreSQL restart, a failover) is pinged before its first
        # query of each request or task and replaced, instead of failing that request with a 500.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web server and Celery children share the file. Deferred transactions fail at once with "database is
    # locked" when a transaction that read first tries to write while another process writes; immediate ones take
    # the write lock up front and wait for it (up to `timeout` seconds), and WAL lets pages read meanwhile.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        **DATABASES["default"].get("OPTIONS", {}),
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

# Sign-in: django-axes first, so a locked-out user or address is refused before a password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# After VIGIA_LOGIN_FAILURE_LIMIT failed logins, that username, and separately that address, wait
# VIGIA_LOGIN_LOCKOUT_MINUTES; a success resets the count.
AXES_FAILURE_LIMIT = env_int("VIGIA_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("VIGIA_LOGIN_LOCKOUT_MINUTES", 15) / 60
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"
AXES_CLIENT_IP_CALLABLE = "moderation.requestcontext.client_ip"
AXES_VERBOSE = False
# A session ends after VIGIA_SESSION_IDLE_SECONDS without a request; changing settings or activating a model asks
# for the password again once the sign-in is older than VIGIA_REAUTH_MINUTES.
SESSION_COOKIE_AGE = env_int("VIGIA_SESSION_IDLE_SECONDS", 3600)
SESSION_SAVE_EVERY_REQUEST = True
VIGIA_REAUTH_MINUTES = env_int("VIGIA_REAUTH_MINUTES", 15)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "queue"
LOGOUT_REDIRECT_URL = "login"

# Uploads. Django does not cap a file's size itself, so validation enforces VIGIA_MAX_UPLOAD_BYTES per image.
VIGIA_MAX_UPLOAD_BYTES = env_int("VIGIA_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
VIGIA_MAX_IMAGE_PIXELS = env_int("VIGIA_MAX_IMAGE_PIXELS", 40_000_000)
VIGIA_MAX_IMAGES_PER_LISTING = env_int("VIGIA_MAX_IMAGES_PER_LISTING", 10)
DATA_UPLOAD_MAX_NUMBER_FILES = VIGIA_MAX_IMAGES_PER_LISTING
# A whole request: every image at its limit plus the form fields. Refused from Content-Length before it is read.
VIGIA_MAX_REQUEST_BYTES = env_int(
    "VIGIA_MAX_REQUEST_BYTES", VIGIA_MAX_IMAGES_PER_LISTING * VIGIA_MAX_UPLOAD_BYTES + 1024 * 1024
)
FILE_UPLOAD_HANDLERS = [
    "moderation.uploads.LimitedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Models: the registry of trained versions and the bottleneck cache shared by every retrain.
VIGIA_MODEL_REGISTRY = Path(os.environ.get("VIGIA_MODEL_REGISTRY", VAR_DIR / "models"))
VIGIA_FEATURE_CACHE = Path(os.environ.get("VIGIA_FEATURE_CACHE", VAR_DIR / "feature-cache"))
VIGIA_BACKBONE = os.environ.get("VIGIA_BACKBONE", "mobilenet_v1")
VIGIA_BACKBONE_WEIGHTS = os.environ.get("VIGIA_BACKBONE_WEIGHTS", "")
# Where backbones converted or downloaded once are kept (the offline MobileNet V1 import); unset: ~/.cache/vigia.
VIGIA_BACKBONE_CACHE = os.environ.get("VIGIA_BACKBONE_CACHE") or None
VIGIA_TRAINING_DATA = Path(os.environ.get("VIGIA_TRAINING_DATA", VAR_DIR / "training-data"))

# Scoring: how many pending images one task scores in a forward pass, and when to give up on one.
VIGIA_SCORING_BATCH_SIZE = env_int("VIGIA_SCORING_BATCH_SIZE", 32)
VIGIA_PENDING_SWEEP_SECONDS = env_int("VIGIA_PENDING_SWEEP_SECONDS", 120)
# A scoring task is one forward pass of a batch: seconds, not the half hour a retrain may take. The hard limit
# kills the child (its images then count the attempt, like a crash); the soft one lets the task hand them back.
VIGIA_SCORING_TIME_LIMIT = env_int("VIGIA_SCORING_TIME_LIMIT", 120)
VIGIA_SCORING_SOFT_TIME_LIMIT = max(1, VIGIA_SCORING_TIME_LIMIT - 10)
# `POST /api/v1/score` waits this long for a scoring worker's answer before a 503 (the web never loads a model).
VIGIA_SCORE_TIMEOUT_SECONDS = float(os.environ.get("VIGIA_SCORE_TIMEOUT_SECONDS", "10"))
# An infrastructure error (database, lock timeout, unreadable shared file) gives the attempt back; the image is
# retried by the sweeper after a delay that doubles with each such error, from the first value up to the second.
VIGIA_SCORING_RETRY_SECONDS = env_int("VIGIA_SCORING_RETRY_SECONDS", 30)
VIGIA_SCORING_RETRY_MAX_SECONDS = env_int("VIGIA_SCORING_RETRY_MAX_SECONDS", 600)
# Every scoring worker process checks the active pointer this often in the background, so a promotion is
# loaded, smoke-tested and serving within seconds even in a process that gets no task.
VIGIA_MODEL_WATCH_SECONDS = float(os.environ.get("VIGIA_MODEL_WATCH_SECONDS", "1.0"))
# Before matching a batch, a scoring process reads the banks' version if it last did longer ago than this, and
# loads what changed: a decision's hash matches uploads on every worker within about a second of its commit.
VIGIA_BANK_REFRESH_SECONDS = float(os.environ.get("VIGIA_BANK_REFRESH_SECONDS", "1.0"))
# Near-duplicates waiting for review are one queue entry decided once (`services.grouping`); 0 turns it off.
VIGIA_QUEUE_GROUPING = env_bool("VIGIA_QUEUE_GROUPING", True)
# Most lines a hash file imported into a bank may have (all of it is checked before anything is stored).
VIGIA_BANK_IMPORT_MAX_LINES = env_int("VIGIA_BANK_IMPORT_MAX_LINES", 1_000_000)
# TensorFlow threads per process: unset, training uses TensorFlow's default (every core), and so does the
# LiteRT extractor that embeds images for it.
VIGIA_TF_THREADS = env_int("VIGIA_TF_THREADS", 0) or None
# Threads of the model in each scoring process (worker child, web process answering /score), for either runtime;
# unset, VIGIA_TF_THREADS if that is set, else 1 (docs/operations.md: one child per core beats one two-thread child).
VIGIA_SCORING_THREADS = env_int("VIGIA_SCORING_THREADS", 0) or VIGIA_TF_THREADS or 1
# Which runtime serves and embeds: "litert" (a version's checked LiteRT file when it has one, else Keras) or
# "keras" (always the Keras model, as before LiteRT files existed).
VIGIA_RUNTIME = os.environ.get("VIGIA_RUNTIME", "litert").strip().lower() or "litert"
if VIGIA_RUNTIME not in ("litert", "keras"):
    raise ImproperlyConfigured(f"VIGIA_RUNTIME must be litert or keras, got {VIGIA_RUNTIME!r}")
# A Celery worker's parent preloads what its children will run (never running it) so that replacement children
# start in well under a second: TensorFlow for training and Keras serving, only the LiteRT interpreter for a
# scoring worker whose active version serves with LiteRT. 0 turns it off.
VIGIA_PRELOAD_TENSORFLOW = env_bool("VIGIA_PRELOAD_TENSORFLOW", True)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# How often beat repairs what a broker outage may have dropped: outbox messages, events, webhook retries.
VIGIA_RELAY_SECONDS = float(os.environ.get("VIGIA_RELAY_SECONDS", "5"))

# Webhooks. Endpoints must be https and resolve to public addresses, checked when each request is sent (a name may
# resolve elsewhere later), unless these allow otherwise; with DEBUG on, a local receiver (http, loopback) works.
VIGIA_WEBHOOK_ALLOW_HTTP = env_bool("VIGIA_WEBHOOK_ALLOW_HTTP", DEBUG)
VIGIA_WEBHOOK_ALLOW_LOOPBACK = env_bool("VIGIA_WEBHOOK_ALLOW_LOOPBACK", DEBUG)
VIGIA_WEBHOOK_ALLOW_PRIVATE = env_bool("VIGIA_WEBHOOK_ALLOW_PRIVATE", False)
VIGIA_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("VIGIA_WEBHOOK_TIMEOUT_SECONDS", "15"))
# An endpoint failing without a single success for this long is disabled (and shown on the settings page).
VIGIA_WEBHOOK_DISABLE_AFTER_SECONDS = env_int("VIGIA_WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 24 * 3600)
# Seconds to wait after the 1st, 2nd, ... failed attempt of a delivery (each +-20%), about three days in all; after
# the last one the delivery is given up as failed.
VIGIA_WEBHOOK_RETRY_SCHEDULE = [
    float(seconds)
    for seconds in env_list("VIGIA_WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,50400,72000,86400")
]
# While an endpoint fails, the deliveries waiting with the failed one are held at most this long after its last
# failed attempt; then the next of them is tried (a probe). Late in the schedule a retry is hours away, and a
# receiver back meanwhile would get nothing until then.
VIGIA_WEBHOOK_PROBE_SECONDS = env_int("VIGIA_WEBHOOK_PROBE_SECONDS", 300)
if VIGIA_WEBHOOK_PROBE_SECONDS < 1:
    raise ImproperlyConfigured("VIGIA_WEBHOOK_PROBE_SECONDS must be at least 1 (seconds between probes).")

# Shared state every web worker sees: API request counts (rate limits). Redis, on the broker's server.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "vigia-cache",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}

CELERY_BROKER_URL = REDIS_URL
# Results are kept only for calls someone waits on (`outbox.call`, e.g. `/api/v1/score`); every other task ignores
# its result. They live a few minutes in the broker's Redis and are deleted once read.
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_RESULT_EXPIRES = 300
# A caller waits seconds at most, so the result store is retried briefly (Celery's default, 20 retries a second
# apart, would hold a web worker for 20 s while Redis is down).
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Loading TensorFlow and a model in a fresh child takes seconds; the default 4 s caused a kill loop.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 60
# The default limit is for training; scoring tasks carry their own (VIGIA_SCORING_TIME_LIMIT, set on the task).
CELERY_TASK_TIME_LIMIT = env_int("VIGIA_TASK_TIME_LIMIT", 1800)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Unacknowledged tasks of a lost worker come back after this long; it must exceed every task's time limit, or
    # Redis would hand a task that is still running to a second worker.
    "visibility_timeout": max(CELERY_TASK_TIME_LIMIT, VIGIA_SCORING_TIME_LIMIT) + 600,
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Reconnects to a broker that is back within 5 s (Celery's own back-off waits up to 30 s; `moderation.consumer`),
# and never gives up: Celery's 100 attempts would end after about 8 minutes at that pace, and a worker that gives
# up exits (and `make run` with it) where it should wait for Redis however long it is down.
CELERY_WORKER_CONSUMER = "moderation.consumer:Consumer"
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_DEFAULT_QUEUE = "default"
# By task name (`moderation.outbox` names them).
CELERY_TASK_ROUTES = {
    "moderation.score_images": {"queue": "scoring"},
    "moderation.score_now": {"queue": "interactive"},
    "moderation.match_images": {"queue": "scoring"},
    "moderation.run_training": {"queue": "training"},
    "moderation.embed_examples": {"queue": "training"},
    "moderation.deliver_webhooks": {"queue": "webhooks"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# The DatabaseScheduler copies these entries into its tables at start; the sweeper re-queues images that have
# waited longer than VIGIA_PENDING_SWEEP_SECONDS (lost messages, or no model active when they arrived).
CELERY_BEAT_SCHEDULE = {
    "sweep-pending-images": {
        "task": "moderation.sweep_pending",
        "schedule": float(max(10, VIGIA_PENDING_SWEEP_SECONDS // 2)),
    },
    # Tasks whose publish failed (the broker was down) are sent again from the outbox table.
    "relay-outbox": {"task": "moderation.relay_outbox", "schedule": VIGIA_RELAY_SECONDS},
    # Committed events get their feed position and webhook deliveries (normally at once, on commit).
    "relay-events": {"task": "moderation.relay_events", "schedule": VIGIA_RELAY_SECONDS},
    # Webhook deliveries due for a retry are handed to the webhooks queue.
    "dispatch-webhooks": {"task": "moderation.dispatch_webhooks", "schedule": VIGIA_RELAY_SECONDS},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Training runs: a thread stamps a heartbeat every VIGIA_TRAINING_HEARTBEAT_SECONDS; the sweeper (a beat row that
# `manage.py sync_models` creates) fails a run silent for VIGIA_TRAINING_STALE_SECONDS. VIGIA_TRAINING_HPARAMS
# (JSON) overrides the active version's hyper-parameters for retrains, e.g. {"epochs": 30}.
VIGIA_TRAINING_HEARTBEAT_SECONDS = float(os.environ.get("VIGIA_TRAINING_HEARTBEAT_SECONDS", "5"))
VIGIA_TRAINING_STALE_SECONDS = float(os.environ.get("VIGIA_TRAINING_STALE_SECONDS", "120"))
VIGIA_TRAINING_HPARAMS = json.loads(os.environ.get("VIGIA_TRAINING_HPARAMS") or "{}")
# Decided images are embedded into the feature cache on the training queue as they are decided, so a retrain
# finds them there instead of embedding them between the trigger and the promotion.
VIGIA_EMBED_DECISIONS = env_bool("VIGIA_EMBED_DECISIONS", True)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "moderation.api.authentication.ClientKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "moderation.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Per client (all its keys together; a desk session counts as the desk's client): one marketplace cannot fill
    # every web worker. Scoring one photo costs a forward pass, so it has a much lower rate of its own.
    "DEFAULT_THROTTLE_CLASSES": ["moderation.api.throttling.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "client": os.environ.get("VIGIA_API_RATE", "1200/min"),
        "score": os.environ.get("VIGIA_SCORE_RATE", "60/min"),
        "anonymous": os.environ.get("VIGIA_ANONYMOUS_RATE", "120/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Vigia moderation API",
    "DESCRIPTION": "Send listings and their photos for scoring; read statuses, scores and moderator decisions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page loads Redoc from this server (drf-spectacular-sidecar), so it works without internet access.
    "REDOC_DIST": "SIDECAR",
    # Listings, images and appeals all have a `status`; name their enums instead of letting the schema invent names.
    "ENUM_NAME_OVERRIDES": {
        "ListingStatusEnum": "moderation.models.ListingStatus",
        "ImageStatusEnum": "moderation.models.ImageStatus",
        "AppealStatusEnum": "moderation.models.AppealStatus",
    },
}

# Production hardening; `manage.py check --deploy` is clean with DEBUG off.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
