"""The figures the reliability tests measure, printed at the end of the run.

Tests `record` a value or `add` to a count; `tests/reliability/conftest.py` prints them in the terminal
summary and, when `CVAE_RELIABILITY_FIGURES` names a file, writes them there as JSON (docs/reliability.md
quotes them).
"""

from __future__ import annotations

FIGURES: dict[str, object] = {}


def record(name: str, value: object) -> None:
    """Set a figure."""
    FIGURES[name] = value


def add(name: str, count: int = 1) -> None:
    """Add to a counted figure."""
    current = FIGURES.get(name, 0)
    assert isinstance(current, int)
    FIGURES[name] = current + count
