"""Shared fixtures: the SDK is imported from the source folder, exactly as the runtime does
(it puts python/ on PYTHONPATH rather than installing the package)."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

import sluice  # noqa: E402
from sluice import _feed, _sql  # noqa: E402


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    """Every test starts with no registered feeds and no configured sources."""
    _feed._clear_registry()
    sluice.configure(sources={})
    yield
    _feed._clear_registry()
    sluice.configure(sources={})
