"""The checkpoint format: the one module that writes and reads model files.

A checkpoint is a directory holding `model.safetensors` (the weights; safetensors cannot run code on
load) and `metadata.json` (format version, the network's config, the sha256 of the weights file and
whatever the writer adds: training settings, metrics, data fingerprint). Loading verifies the format
version and the digest, rebuilds the network from the stored config and loads the weights strictly.
Every failure is a `CheckpointError` that says what is wrong with which file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from model.config import CVAEConfig
from model.errors import CheckpointError
from model.network import CVAE

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
# The sampling temperature of a version that records none (or a nonsensical one): the true prior.
DEFAULT_TEMPERATURE = 1.0
MAX_TEMPERATURE = 2.0

MAX_HEADER_BYTES = 10_000_000  # a safetensors header (JSON tensor index) larger than this is refused

M = TypeVar("M", bound=nn.Module)


def temperature_or_default(value: Any) -> float:
    """A recorded default temperature if it is a number in [0, MAX_TEMPERATURE], else the fallback."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TEMPERATURE:
        return float(value)
    return DEFAULT_TEMPERATURE


@dataclass(frozen=True)
class VersionMetadata:
    """The typed reading of a version's metadata.json: the fields code relies on, and the whole
    record (training settings, data fingerprint, metrics, history) as written, in `record`."""

    config: CVAEConfig
    weights_sha256: str
    default_temperature: float
    record: dict[str, Any]

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> VersionMetadata:
        """Type a record that `read_metadata` accepted; CheckpointError when its config is not a CVAE's."""
        return cls(
            config=CVAEConfig.from_dict(record["config"]),
            weights_sha256=str(record["weights_sha256"]),
            default_temperature=temperature_or_default(record.get("default_temperature")),
            record=record,
        )


@dataclass(frozen=True)
class Checkpoint:
    """A CVAE loaded from disk, with the metadata it was saved with."""

    model: CVAE
    metadata: dict[str, Any]

    @property
    def info(self) -> VersionMetadata:
        """The metadata, typed."""
        return VersionMetadata.from_record(self.metadata)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON and fsync it, so a later rename publishes complete content."""
    with path.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def save_module(
    directory: Path, module: nn.Module, config: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """Write weights and metadata of any module into `directory`; returns the metadata written."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(weights), metadata={"format_version": str(FORMAT_VERSION)})
    with weights.open("rb") as handle:
        os.fsync(handle.fileno())
    metadata = {
        **extra,
        "format_version": FORMAT_VERSION,
        "config": config,
        "weights_sha256": sha256_file(weights),
    }
    write_json(directory / METADATA_FILE, metadata)
    return metadata


def save_checkpoint(
    directory: Path, model: CVAE, extra: dict[str, Any], *, default_temperature: float | None = None
) -> dict[str, Any]:
    """Write a CVAE checkpoint; `extra` (JSON-serialisable) is merged into the metadata, with the
    version's default sampling temperature (DEFAULT_TEMPERATURE when None)."""
    if default_temperature is None:
        default_temperature = extra.get("default_temperature")
    temperature = DEFAULT_TEMPERATURE if default_temperature is None else float(default_temperature)
    if temperature_or_default(temperature) != temperature:
        raise ValueError(f"default_temperature must be in [0, {MAX_TEMPERATURE}], got {temperature}")
    return save_module(
        directory, model, model.config.to_dict(), {**extra, "default_temperature": temperature}
    )


def read_metadata(directory: Path) -> dict[str, Any]:
    """The checkpoint's metadata, checked for presence, JSON validity and format version."""
    path = directory / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"no {METADATA_FILE} in checkpoint {directory}")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict) or "config" not in metadata or "weights_sha256" not in metadata:
        raise CheckpointError(f"{path} lacks the config or weights_sha256 field")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {metadata.get('format_version')!r}; this code reads {FORMAT_VERSION}"
        )
    return metadata


def load_module(
    directory: Path,
    build: Callable[[dict[str, Any]], M],
    device: torch.device | str = "cpu",
) -> tuple[M, dict[str, Any]]:
    """Verify and load a checkpoint written by `save_module`; `build` makes the network from config."""
    metadata = read_metadata(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in checkpoint {directory}")
    actual = sha256_file(weights)
    if actual != metadata["weights_sha256"]:
        raise CheckpointError(
            f"{weights} is corrupt or truncated: sha256 {actual[:12]}... does not match the metadata"
        )
    # The config's sizes are bounded and the weights' shapes checked against a network built on the
    # meta device (no memory) before any tensor is read or allocated.
    skeleton = _build(build, metadata["config"], torch.device("meta"))
    _check_shapes(weights, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()})
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc
    module = _build(build, metadata["config"], torch.device("cpu"))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit the stored config: {exc}") from exc
    module.to(device).eval()
    return module, metadata


def _build(build: Callable[[dict[str, Any]], M], config: Any, device: torch.device) -> M:
    """The network of a stored config; any failure of its constructor is a CheckpointError."""
    try:
        with device:
            return build(config)
    except CheckpointError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise CheckpointError(f"the stored config does not build a network: {exc}") from exc


def read_tensor_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors file's header, without reading any tensor."""
    try:
        with weights.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > MAX_HEADER_BYTES:
                raise CheckpointError(f"{weights} is not a readable safetensors file (a {size}-byte header)")
            header = json.loads(handle.read(size))
        return {
            name: tuple(int(n) for n in entry["shape"])
            for name, entry in header.items()
            if name != "__metadata__"
        }
    except CheckpointError:
        raise
    except (OSError, struct.error, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc


def _check_shapes(weights: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """The weights file holds exactly the tensors the config's network has, with the same shapes."""
    found = read_tensor_shapes(weights)
    if found != expected:
        names = sorted(set(found) ^ set(expected)) or sorted(
            n for n in expected if found.get(n) != expected[n]
        )
        raise CheckpointError(
            f"{weights} does not fit the stored config: tensors {names[:4]} differ in name or shape"
        )


def load_checkpoint(directory: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a CVAE checkpoint onto `device`, in eval mode."""
    model, metadata = load_module(directory, lambda cfg: CVAE(CVAEConfig.from_dict(cfg)), device)
    return Checkpoint(model=model, metadata=metadata)
