"""Fixtures shared across test modules: a fresh SQLite store per test.

A module that needs a different store (another backend, a fixed clock)
defines its own ``store`` or ``store_path`` fixture, which wins over these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccag.store import Store, open_store_sync


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    """A path for a SQLite store in the test's own directory; nothing there yet."""
    return os.path.join(str(tmp_path), "ccag.sqlite3")


@pytest.fixture
def store(store_path: str) -> Iterator[Store]:
    """An opened, migrated store at :func:`store_path`, closed after the test."""
    with open_store_sync(store_path) as opened:
        yield opened
