"""The CVAE: network, loss, checkpoint format and registry of versions."""

from model.config import PRESETS, CVAEConfig, preset
from model.errors import (
    CheckpointError,
    ModelError,
    RegistryError,
    VersionNotFoundError,
)
from model.network import CVAE

__all__ = [
    "CVAE",
    "PRESETS",
    "CVAEConfig",
    "CheckpointError",
    "ModelError",
    "RegistryError",
    "VersionNotFoundError",
    "preset",
]
