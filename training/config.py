"""The training job's settings: one frozen dataclass holding the recipe, filled from a preset, a
config file and flags (in that order of precedence, lowest first)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from model.registry import default_registry
from training.presets import PRESETS, get_preset
from training.recipe import Recipe, setting


@dataclass(frozen=True)
class JobConfig:
    """Everything one training run needs; recorded (flattened) in the version's metadata."""

    registry: Path = field(
        default_factory=default_registry,
        metadata={"help": "registry directory ($CVAE_REGISTRY, else ./registry)"},
    )
    data: str = setting(
        "bundled", "bundled | mnist (the full MNIST, fetched when missing) | a directory of MNIST IDX files"
    )
    preset: str = setting("default", "network preset with its training recipe", choices=tuple(PRESETS))
    latent_dim: int | None = setting(None, "override the preset's latent size")
    seed: int = setting(0, "seeds the split, the initialisation, the batches and the evaluation")
    device: str = setting("auto", "auto (cuda, then mps, then cpu) | cpu | cuda[:N]")
    val_fraction: float = setting(0.1, "share of the training data held out for validation")
    max_examples: int | None = setting(None, "cap the training examples")
    evaluate: bool = setting(True, "the judge-based evaluation (--no-eval: fast smoke runs)", flag="eval")
    eval_samples_per_class: int = setting(200, "generated digits per class for conditional accuracy")
    iw_samples: int = setting(100, "importance samples of the IW NLL (0 = skip it)")
    classifier_epochs: int = setting(6, "epochs of the judge classifier")
    default_temperature: float | None = setting(
        None,
        "the version's default temperature (samples grid, conditional accuracy, the service's default); "
        "unset = the highest of 1.0, 0.9, ... 0.5 whose samples the judge reads well enough: "
        "legible_overall of them as requested and legible_worst of every digit",
    )
    legible_overall: float = setting(0.97, "default temperature: share of samples read as requested")
    legible_worst: float = setting(0.93, "default temperature: ... and for the worst digit")
    promote: bool = setting(True, "make the new version the active one")
    progress: bool = setting(True, "progress bars and log lines")
    recipe: Recipe = field(default_factory=Recipe)

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON form: the job's fields and the recipe's side by side (a valid --config file)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "recipe"}
        data["registry"] = str(self.registry)
        return {**data, **asdict(self.recipe)}


JOB_FIELDS = frozenset(f.name for f in fields(JobConfig)) - {"recipe"}
RECIPE_FIELDS = frozenset(f.name for f in fields(Recipe))


def preset_job(preset: str = "default", **overrides: Any) -> JobConfig:
    """A JobConfig with the preset's recipe (and default temperature), then flat `overrides` on top."""
    chosen = get_preset(preset)
    unknown = set(overrides) - JOB_FIELDS - RECIPE_FIELDS
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    recipe = replace(chosen.recipe, **{k: v for k, v in overrides.items() if k in RECIPE_FIELDS})
    job = dict(chosen.job)
    job.update({k: v for k, v in overrides.items() if k in JOB_FIELDS})
    return JobConfig(**{**job, "preset": preset, "recipe": recipe})


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or TOML file of job and recipe fields (keys with '-' or '_')."""
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a table/object of settings")
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = set(values) - JOB_FIELDS - RECIPE_FIELDS
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
    if "registry" in values:
        values["registry"] = Path(values["registry"])
    return values
