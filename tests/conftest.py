"""The suite's fixtures live in ``tests/support/fixtures.py``; its helpers in ``tests/support``."""

pytest_plugins = ["tests.support.fixtures"]
