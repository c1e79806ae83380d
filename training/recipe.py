"""The optimisation recipe of one run: every field declared once, with its default and its help.

`training/presets.py` pairs a recipe with a network; `training/config.py` holds it inside the job's
settings; `training/cli.py` derives one flag per field from the `help` in each field's metadata.
The defaults are the `default` preset's recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def setting(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its command-line help (read by training/cli.py)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one run (Adam on the KL-weighted negative ELBO)."""

    epochs: int = setting(150, "maximum epochs")
    batch_size: int = setting(128, "examples per optimiser step (per process under torchrun)")
    lr: float = setting(1e-3, "Adam learning rate")
    beta: float = setting(1.0, "KL weight")
    kl_warmup_epochs: int = setting(0, "epochs of linear KL warm-up")
    # A small classifier learns to read y from z while the encoder, through gradient reversal,
    # learns to make that impossible, so z carries style only.
    adversary_weight: float = setting(3.0, "weight of the class-removing adversary on z, 0 = off")
    # Share of each batch shown as a slightly rotated/scaled/shifted copy (training/augment.py).
    augment: float = setting(0.5, "share of each batch shown as a small random affine warp")
    cosine_lr: bool = setting(True, "decay the learning rate to 0 over the epochs")
    patience: int = setting(30, "early stopping: epochs without a better validation loss")

    def __post_init__(self) -> None:
        """Refuse nonsense (from flags, a config file or code) before any training: ValueError."""
        for name in ("epochs", "batch_size", "kl_warmup_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("lr", "beta", "adversary_weight", "augment"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not isinstance(self.cosine_lr, bool):
            raise ValueError(f"cosine_lr must be true or false, got {self.cosine_lr!r}")
        # Every comparison with NaN is False, so NaN fails each range below.
        checks = (
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "finite and > 0"),
            ("beta", self.beta >= 0, ">= 0"),
            ("kl_warmup_epochs", self.kl_warmup_epochs >= 0, ">= 0"),
            ("adversary_weight", self.adversary_weight >= 0, ">= 0"),
            ("augment", 0 <= self.augment <= 1, "from 0 to 1"),
            ("patience", self.patience >= 1, ">= 1"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    def kl_weight(self, epoch: int) -> float:
        """Linear KL warm-up from beta/warmup to beta over the first epochs (epoch counts from 0)."""
        if self.kl_warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, (epoch + 1) / self.kl_warmup_epochs)
