"""Tests never reach the internet and never load a model at import time; shared fixtures live in `tests.support`."""

pytest_plugins = ["tests.support.fixtures"]
