"""The named presets: each pairs a network (model/config.py) with its training recipe, in one table.

`python -m training --preset NAME` trains one; flags and config files override single fields.
docs/model.md says how each was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from model.config import CVAEConfig
from training.recipe import Recipe


@dataclass(frozen=True)
class Preset:
    """A network, the recipe that trains it, and the job settings it changes (JobConfig fields)."""

    network: CVAEConfig
    recipe: Recipe
    job: dict[str, Any] = field(default_factory=dict)


# The default network: MLP 512/512, latent 16, the label fed to every decoder layer.
_DEFAULT_NETWORK = CVAEConfig(latent_dim=16, label_every_layer=True)
# The straightforward way: plain ELBO, constant learning rate.
_PLAIN: dict[str, Any] = dict(adversary_weight=0.0, augment=0.0, cosine_lr=False, kl_warmup_epochs=0)

PRESETS: dict[str, Preset] = {
    # The project default, chosen by measured quality on the bundled sample (docs/model.md).
    "default": Preset(_DEFAULT_NETWORK, Recipe()),
    # The shipped model (model/pretrained/): the default network and recipe on the full 60,000 MNIST
    # training digits (5 % held out for validation), 200 epochs: label inference on the test digits
    # was 98.92 % after 60 epochs and 98.99 % after 150 (docs/model.md).
    # The judge needs fewer epochs on 57,000 digits; the default temperature must meet the shipped
    # model's targets (>= 99 % of samples read as requested, >= 97 % for every digit).
    "mnist": Preset(
        _DEFAULT_NETWORK,
        Recipe(epochs=200, patience=20),
        job=dict(
            data="mnist", val_fraction=0.05, classifier_epochs=2, legible_overall=0.99, legible_worst=0.97
        ),
    ),
    # The reference design: MLP 512/512, latent 256, label only at the input of each MLP.
    "reference": Preset(CVAEConfig(), Recipe(epochs=20, **_PLAIN), job=dict(default_temperature=1.0)),
    # A few-second model for tests and smoke runs.
    "tiny": Preset(
        CVAEConfig(encoder_hidden=(64,), decoder_hidden=(64,), latent_dim=4), Recipe(epochs=5, **_PLAIN)
    ),
}


def get_preset(name: str) -> Preset:
    """The named preset; a ValueError naming the choices when there is none."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def preset(name: str, **overrides: Any) -> CVAEConfig:
    """The named preset's network, with optional field overrides (None values are ignored)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(get_preset(name).network, **clean)
