"""Test-run environment, set before Django's settings are imported."""

import os

os.environ.setdefault("SECRET_KEY", "test-suite-secret-key-not-used-anywhere-else-0123456789")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
