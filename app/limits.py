"""Limits of a request's fields, shared by the request schemas and the inference path (no framework)."""

from __future__ import annotations

from typing import NewType

from app.exceptions import InvalidInput

DIGITS = "0123456789"
TEXT_ALPHABET = frozenset(DIGITS + " ")
MAX_TEXT = 32
MAX_SAMPLES = 16
MAX_SCALE = 8
SEED_LIMIT = 2**63

DigitText = NewType("DigitText", str)
"""Text that passed `check_text`: 1..MAX_TEXT ASCII digits and spaces, at least one digit."""


def check_text(text: str) -> DigitText:
    """The text if it is 1..32 ASCII digits and spaces with at least one digit, else InvalidInput."""
    if not 1 <= len(text) <= MAX_TEXT:
        raise InvalidInput(f"text must have 1 to {MAX_TEXT} characters, got {len(text)}")
    bad = next((ch for ch in text if ch not in TEXT_ALPHABET), None)
    if bad is not None:
        raise InvalidInput(
            f"text may contain only ASCII digits 0-9 and spaces; {bad!r} (U+{ord(bad):04X}) is not allowed"
        )
    if not any(ch in DIGITS for ch in text):
        raise InvalidInput("text must contain at least one digit")
    return DigitText(text)
