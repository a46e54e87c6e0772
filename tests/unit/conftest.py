"""Unit-test fixtures: an isolated INTERACTIVE_SLURM_HOME for every test, and golden files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_ENV = "UPDATE_GOLDEN"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every unit test is a core test (`pytest -m core`): with the core end-to-end tests they
    also run on the oldest and the newest Python tested (scripts/chroot-cluster: 3.9, 3.13)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.core)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Config and state of every unit test live under a fresh temporary directory."""
    root = tmp_path / "home"
    monkeypatch.setenv("INTERACTIVE_SLURM_HOME", str(root))
    monkeypatch.delenv("INTERACTIVE_SLURM_CONFIG", raising=False)
    monkeypatch.delenv("INTERACTIVE_SLURM_DEBUG", raising=False)
    return root


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """Compare text with ``tests/unit/golden/<name>``; ``UPDATE_GOLDEN=1`` rewrites the file."""

    def check(name: str, actual: str) -> None:
        path = GOLDEN_DIR / name
        if os.environ.get(UPDATE_ENV):
            path.write_text(actual)
            return
        expected = path.read_text() if path.exists() else None
        assert actual == expected, (
            f"output differs from the golden file {path}; if the change is intended, refresh it "
            f"with: {UPDATE_ENV}=1 python3 -m pytest tests/unit -q"
        )

    return check
