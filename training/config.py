"""The training job's settings: one frozen dataclass, filled from flags, a config file or defaults."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_REGISTRY = "./registry"


def default_registry() -> Path:
    """The registry path shared with the service: $CVAE_REGISTRY, else ./registry."""
    return Path(os.environ.get("CVAE_REGISTRY", DEFAULT_REGISTRY))


@dataclass(frozen=True)
class JobConfig:
    """Everything one training run needs; recorded in the version's metadata."""

    registry: Path = field(default_factory=default_registry)
    data: str = "bundled"
    preset: str = "default"
    latent_dim: int | None = None
    epochs: int = 150
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.1
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    # Weight of the adversarial term that removes class information from z (0 = off): a small
    # classifier learns to read y from z while the encoder, through gradient reversal, learns to
    # make that impossible, so z carries style only.
    adversary_weight: float = 3.0
    # Share of each batch shown as a slightly rotated/scaled/shifted copy (training/augment.py).
    augment: float = 0.5
    cosine_lr: bool = True
    patience: int = 30
    max_examples: int | None = None
    evaluate: bool = True
    eval_samples_per_class: int = 200
    iw_samples: int = 100
    classifier_epochs: int = 6
    # The service's default temperature for this version; None = chosen from measured quality
    # (training/evaluate.py: choose_temperature), 1.0 when evaluation is skipped.
    default_temperature: float | None = None
    promote: bool = True
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["registry"] = str(self.registry)
        return data


# Recipe settings that differ from JobConfig's defaults (which are the default preset's recipe).
PRESET_RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    # The reference design trained the straightforward way: plain ELBO, constant learning rate.
    "reference": dict(
        epochs=20,
        kl_warmup_epochs=0,
        adversary_weight=0.0,
        augment=0.0,
        cosine_lr=False,
        default_temperature=1.0,
    ),
    "tiny": dict(epochs=5, kl_warmup_epochs=0, adversary_weight=0.0, augment=0.0, cosine_lr=False),
}


def preset_job(preset: str = "default", **overrides: Any) -> JobConfig:
    """A JobConfig with the preset's recipe, then `overrides` on top."""
    if preset not in PRESET_RECIPES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESET_RECIPES)}")
    return JobConfig(**{**PRESET_RECIPES[preset], "preset": preset, **overrides})


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or TOML file of JobConfig fields (keys with '-' or '_')."""
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a table/object of settings")
    known = {f.name for f in fields(JobConfig)}
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
    if "registry" in values:
        values["registry"] = Path(values["registry"])
    return values
