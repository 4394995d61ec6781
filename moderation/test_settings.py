"""Settings for the test suite: production settings with a throwaway key and no HTTPS redirect.

Tests run with DEBUG off, as production does; only what a test machine cannot provide is changed here.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-suite-secret-key-not-used-anywhere-else-0123456789")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from moderation.settings import *  # noqa: E402,F403

STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests never run collectstatic: let whitenoise find files through the finders instead of warning at start-up.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
# Embedding decided images needs a backbone; the tests that exercise it turn it on, the rest record decisions
# without queueing work no worker of theirs would consume.
VIGIA_EMBED_DECISIONS = False
# Rate-limit counts per test process, emptied before each test (tests.support.fixtures); production shares Redis.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Every scoring batch reads the banks' version, so a test that adds an entry sees it in the next batch.
VIGIA_BANK_REFRESH_SECONDS = 0.0
