"""The CVAE: network, loss, checkpoint format and registry of versions."""

from model.config import CVAEConfig
from model.errors import (
    CheckpointError,
    DeviceError,
    ModelError,
    RegistryError,
    VersionNotFoundError,
)
from model.network import CVAE

__all__ = [
    "CVAE",
    "CVAEConfig",
    "CheckpointError",
    "DeviceError",
    "ModelError",
    "RegistryError",
    "VersionNotFoundError",
]
