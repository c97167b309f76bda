"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import SHARED


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared reference data lives beside the project")
    return SHARED
