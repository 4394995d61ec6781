"""What the tests share: images, factories for rows, one `wait_until`, real workers, and the pytest fixtures.

`tests/conftest.py` registers `tests.support.fixtures` as a plugin, so every test can ask for its fixtures by name
without importing them.
"""
