"""The one rule that turns a device setting into a torch device, for the trainer and the service."""

from __future__ import annotations

import torch

from model.errors import DeviceError


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(setting: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; an explicit device must exist here.

    Raises DeviceError (a RuntimeError) for an unknown name or an accelerator this machine lacks."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {setting!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {setting!r} was asked for but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {setting!r} was asked for but there are {torch.cuda.device_count()} GPUs")
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"device {setting!r} was asked for but Apple MPS is not available")
    return device
