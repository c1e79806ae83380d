"""Domain errors raised by the model package; the service maps them to HTTP answers in one place."""


class ModelError(Exception):
    """Base class of every error the model package raises on purpose."""


class CheckpointError(ModelError):
    """A checkpoint is missing, truncated, corrupt or incompatible with this code."""


class RegistryError(ModelError):
    """The registry cannot do what was asked (no active version, a bad version name...)."""


class RegistryReadOnly(RegistryError):
    """The registry cannot be written from here (a read-only mount, no permission, a full disk)."""


class VersionNotFoundError(RegistryError):
    """The requested version does not exist in the registry."""


class DeviceError(ModelError, RuntimeError):
    """The requested compute device does not exist on this machine."""
