"""Builders shared by the tests: small trained models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import preset_job
from training.job import JobResult, run


def train_tiny(registry: Path, **overrides: Any) -> JobResult:
    """A few-second training run of the tiny preset into `registry` (promoted)."""
    settings: dict[str, Any] = dict(
        registry=registry,
        epochs=4,
        max_examples=3000,
        evaluate=False,
        progress=False,
        patience=100,
    )
    settings.update(overrides)
    return run(preset_job("tiny", **settings))
